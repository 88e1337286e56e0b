/*
 * Unit tests for credstore policy: the glob matcher and every branch of
 * cs_policy_check(). A fixture builds one allowed Resolve (intake-issued
 * grant held by an executor, or relay-issued grant held by a gateway); each
 * test changes one thing and expects one specific deny code, so every
 * reason is shown reachable and the intersection of grant, credential
 * policy and issuer scope is exercised from each side.
 */
#include <string.h>

#include <CUnit/Basic.h>

#include "policy.h"

#define NOW      1800000000000LL
#define INTAKE   "spiffe://airlock/intake/intake-0"
#define RELAY    "spiffe://airlock/relay/edge-1"
#define EXECUTOR "spiffe://airlock/executor/ci-1"
#define GATEWAY  "spiffe://airlock/gateway/crm"

/* ---- fixture ---- */

static char *g_creds[] = {"github/ci-bot", "npm"};
static char *g_dests[] = {"api.github.com", "*.githubusercontent.com",
                          "http://mirror.internal:8080", "127.0.0.1:8443", "objects.example.com"};
static char *p_issuers[] = {"spiffe://airlock/intake/*", "spiffe://airlock/relay/edge-*"};
static char *p_principals[] = {"acme/*"};
static char *p_holders[] = {"spiffe://airlock/executor/ci-*", GATEWAY};
static char *p_pools[] = {"ci"};
static char *p_routes[] = {"crm/*"};
static char *p_dests[] = {"api.github.com", "*.githubusercontent.com",
                          "http://mirror.internal:8080", "127.0.0.1:8443", "uploads.github.com"};

static const char *s_principals[] = {"acme/**"};
static const char *s_pools[] = {"ci", "data"};
static const char *s_routes[] = {"crm/main"};
static const char *s_creds[] = {"github/*", "npm"};

static Airlock__V1__Grant grant;
static Airlock__V1__BindingPolicy pol;
static struct cs_issuer_scope scopes[2];
static struct cs_policy_input in;
static char why[CS_WHY_MAX];

#define SET_LIST(obj, field, arr)                                                                  \
    do {                                                                                           \
        (obj).n_##field = sizeof(arr) / sizeof((arr)[0]);                                          \
        (obj).field = (arr);                                                                       \
    } while (0)

static void setup_intake(void)
{
    airlock__v1__grant__init(&grant);
    grant.grant_id = "00112233445566778899aabbccddeeff";
    grant.issuer = INTAKE;
    grant.audience = "spiffe://airlock/credstore";
    grant.holder = EXECUTOR;
    grant.principal = "acme/team-a";
    grant.subject = "job/j1/attempt/1";
    grant.scope = "ci";
    SET_LIST(grant, credentials, g_creds);
    SET_LIST(grant, destinations, g_dests);
    grant.not_before_ms = NOW;
    grant.expires_ms = NOW + 60000;

    airlock__v1__binding_policy__init(&pol);
    SET_LIST(pol, allowed_issuers, p_issuers);
    SET_LIST(pol, allowed_principals, p_principals);
    SET_LIST(pol, allowed_holders, p_holders);
    SET_LIST(pol, allowed_pools, p_pools);
    SET_LIST(pol, allowed_routes, p_routes);
    SET_LIST(pol, allowed_destinations, p_dests);
    pol.max_grant_lifetime_ms = 300000;

    memset(scopes, 0, sizeof scopes);
    scopes[0].issuer = "spiffe://airlock/intake/*";
    SET_LIST(scopes[0], principals, s_principals);
    SET_LIST(scopes[0], pools, s_pools);
    SET_LIST(scopes[0], credentials, s_creds);
    scopes[1].issuer = "spiffe://airlock/relay/edge-1";
    SET_LIST(scopes[1], principals, s_principals);
    SET_LIST(scopes[1], routes, s_routes);
    SET_LIST(scopes[1], credentials, s_creds);

    memset(&in, 0, sizeof in);
    in.grant = &grant;
    in.key_id = "intake-key-1";
    in.caller = EXECUTOR;
    in.credential = "github/ci-bot";
    in.destination = "api.github.com:443";
    in.destination_len = strlen(in.destination);
    in.policy = &pol;
    in.allow_plain_http = false;
    in.default_max_lifetime_ms = 3600000;
    in.scopes = scopes;
    in.n_scopes = 2;
}

static void setup_relay(void)
{
    setup_intake();
    grant.issuer = RELAY;
    grant.holder = GATEWAY;
    grant.subject = "request/r1";
    grant.scope = "crm/main";
    in.caller = GATEWAY;
    in.key_id = "relay-key-1";
}

static void set_dest(const char *d)
{
    in.destination = d;
    in.destination_len = strlen(d);
}

static int check(void)
{
    memset(why, 0x5a, sizeof why);
    return cs_policy_check(&in, why, sizeof why);
}

#define EXPECT(code)                                                                               \
    do {                                                                                           \
        int rc_ = check();                                                                         \
        CU_ASSERT_EQUAL(rc_, (code));                                                              \
        if (rc_ != (code))                                                                         \
            fprintf(stderr, "\n  line %d: got %s (%s), want %s\n", __LINE__, cs_deny_name(rc_),    \
                    why, cs_deny_name(code));                                                      \
    } while (0)

/* ---- globs ---- */

static void test_glob(void)
{
    CU_ASSERT_TRUE(cs_glob_match("acme", "acme"));
    CU_ASSERT_FALSE(cs_glob_match("acme", "acmex"));
    CU_ASSERT_FALSE(cs_glob_match("acme", "Acme")); /* case-sensitive */
    CU_ASSERT_FALSE(cs_glob_match("acme/*", "ACME/x"));
    CU_ASSERT_TRUE(cs_glob_match("", ""));
    CU_ASSERT_FALSE(cs_glob_match("", "a"));
    CU_ASSERT_TRUE(cs_glob_match("*", ""));
    CU_ASSERT_TRUE(cs_glob_match("*", "anything-without-slash"));
    CU_ASSERT_FALSE(cs_glob_match("*", "a/b"));
    CU_ASSERT_TRUE(cs_glob_match("**", "a/b/c"));
    CU_ASSERT_TRUE(cs_glob_match("***", "a/b/c"));
    CU_ASSERT_TRUE(cs_glob_match("acme/*", "acme/team-a"));
    CU_ASSERT_TRUE(cs_glob_match("acme/*", "acme/"));
    CU_ASSERT_FALSE(cs_glob_match("acme/*", "acme/team-a/x"));
    CU_ASSERT_FALSE(cs_glob_match("acme/*", "acme"));
    CU_ASSERT_FALSE(cs_glob_match("acme/*", "acmex/team"));
    CU_ASSERT_TRUE(cs_glob_match("acme/**", "acme/team-a/x"));
    CU_ASSERT_FALSE(cs_glob_match("acme/**", "acme-evil/x"));
    CU_ASSERT_TRUE(cs_glob_match("*/team-*", "acme/team-a"));
    CU_ASSERT_FALSE(cs_glob_match("*/team-*", "acme/x/team-a"));
    CU_ASSERT_TRUE(cs_glob_match("**/team-*", "acme/x/team-a"));
    CU_ASSERT_TRUE(cs_glob_match("a*b*c", "axxbyyc"));
    CU_ASSERT_FALSE(cs_glob_match("a*b*c", "axxbyy"));
    CU_ASSERT_TRUE(cs_glob_match("a*c", "ac"));
    CU_ASSERT_FALSE(cs_glob_match("a?c", "abc")); /* no '?' wildcard */
    CU_ASSERT_TRUE(cs_glob_match("a?c", "a?c"));
    CU_ASSERT_FALSE(cs_glob_match("a[b]c", "abc")); /* no classes */
    /* SPIFFE ids */
    CU_ASSERT_TRUE(cs_glob_match("spiffe://airlock/executor/*", EXECUTOR));
    CU_ASSERT_TRUE(cs_glob_match("spiffe://airlock/executor/ci-*", EXECUTOR));
    CU_ASSERT_FALSE(
        cs_glob_match("spiffe://airlock/executor/ci-*", "spiffe://airlock/executor/data-1"));
    CU_ASSERT_FALSE(cs_glob_match("spiffe://airlock/executor/*", GATEWAY));
    CU_ASSERT_FALSE(cs_glob_match("spiffe://airlock/*", EXECUTOR));
    CU_ASSERT_TRUE(cs_glob_match("spiffe://airlock/**", EXECUTOR));
    CU_ASSERT_FALSE(cs_glob_match("spiffe://airlock/executor/*", "spiffe://airlock/executor/a/b"));
    /* NULL, over-long */
    CU_ASSERT_FALSE(cs_glob_match(NULL, "a"));
    CU_ASSERT_FALSE(cs_glob_match("a", NULL));
    static char longs[CS_GLOB_MAX + 2];
    memset(longs, 'a', CS_GLOB_MAX + 1);
    CU_ASSERT_FALSE(cs_glob_match("**", longs));
    longs[CS_GLOB_MAX] = '\0';
    CU_ASSERT_TRUE(cs_glob_match("**", longs));
    CU_ASSERT_TRUE(cs_glob_match(longs, longs));
    /* pathological backtracking case: answered in O(m*n), not exponential time */
    static char pat[CS_GLOB_MAX + 1];
    for (int i = 0; i < 500; i++)
        memcpy(pat + 2 * i, "*a", 2);
    pat[1000] = 'b';
    pat[1001] = '\0';
    CU_ASSERT_FALSE(cs_glob_match(pat, longs));
    longs[CS_GLOB_MAX - 1] = 'b';
    CU_ASSERT_TRUE(cs_glob_match(pat, longs));
    /* lists */
    const char *list[] = {"x", NULL, "acme/*"};
    CU_ASSERT_TRUE(cs_glob_any(list, 3, "acme/a"));
    CU_ASSERT_FALSE(cs_glob_any(list, 2, "acme/a"));
    CU_ASSERT_FALSE(cs_glob_any(list, 0, "x"));
    CU_ASSERT_FALSE(cs_glob_any(NULL, 3, "x"));
}

/* ---- allow paths ---- */

static void test_allow(void)
{
    setup_intake();
    EXPECT(CS_ALLOW);
    CU_ASSERT_STRING_EQUAL(why, "allowed");
    set_dest("https://raw.githubusercontent.com/x/y");
    EXPECT(CS_ALLOW);
    set_dest("API.GITHUB.COM.");
    EXPECT(CS_ALLOW);
    in.credential = "npm";
    EXPECT(CS_ALLOW);
    setup_relay();
    EXPECT(CS_ALLOW);
    /* why may be NULL or tiny */
    CU_ASSERT_EQUAL(cs_policy_check(&in, NULL, 0), CS_ALLOW);
    setup_intake();
    in.caller = "spiffe://airlock/executor/x";
    char tiny[4];
    CU_ASSERT_EQUAL(cs_policy_check(&in, tiny, sizeof tiny), CS_DENY_WRONG_HOLDER);
    CU_ASSERT_EQUAL(strlen(tiny), 3);
}

/* ---- parties ---- */

static void test_bad_input(void)
{
    CU_ASSERT_EQUAL(cs_policy_check(NULL, why, sizeof why), CS_DENY_BAD_INPUT);
    setup_intake();
    in.grant = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    in.policy = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    in.caller = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    in.credential = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    in.destination = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    grant.principal = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    grant.credentials = NULL;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    pol.max_grant_lifetime_ms = -1;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    grant.expires_ms = grant.not_before_ms;
    EXPECT(CS_DENY_BAD_INPUT);
    setup_intake();
    grant.not_before_ms = INT64_MIN;
    grant.expires_ms = INT64_MAX; /* the subtraction would overflow */
    EXPECT(CS_DENY_BAD_INPUT);
}

static void test_caller_role(void)
{
    const char *callers[] = {INTAKE,
                             RELAY,
                             "spiffe://airlock/admin/ops",
                             "spiffe://airlock/credstore/credstore-0",
                             "spiffe://evil/executor/ci-1",
                             "spiffe://airlock/executor/",
                             "executor",
                             ""};
    for (size_t i = 0; i < sizeof callers / sizeof callers[0]; i++) {
        setup_intake();
        in.caller = callers[i];
        grant.holder = (char *)callers[i]; /* even when the grant names it as holder */
        EXPECT(CS_DENY_CALLER_ROLE);
    }
}

static void test_wrong_holder(void)
{
    setup_intake();
    in.caller = "spiffe://airlock/executor/ci-2";
    EXPECT(CS_DENY_WRONG_HOLDER);
    in.caller = GATEWAY;
    EXPECT(CS_DENY_WRONG_HOLDER);
    setup_relay();
    in.caller = "spiffe://airlock/gateway/crm2";
    EXPECT(CS_DENY_WRONG_HOLDER);
}

static void test_issuer_role(void)
{
    setup_intake();
    grant.issuer = RELAY; /* relay grants go to gateways, not executors */
    EXPECT(CS_DENY_ISSUER_ROLE);
    setup_relay();
    grant.issuer = INTAKE; /* intake grants go to executors, not gateways */
    EXPECT(CS_DENY_ISSUER_ROLE);
    setup_intake();
    grant.issuer = "spiffe://airlock/credstore/credstore-0";
    EXPECT(CS_DENY_ISSUER_ROLE);
    grant.issuer = EXECUTOR; /* an edge cannot issue to itself */
    EXPECT(CS_DENY_ISSUER_ROLE);
    grant.issuer = "intake";
    EXPECT(CS_DENY_ISSUER_ROLE);
}

/* ---- what the grant names ---- */

static void test_grant_names(void)
{
    setup_intake();
    in.credential = "github/other";
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);
    in.credential = "github/*"; /* grant credentials are names, not globs */
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);
    in.credential = "GITHUB/CI-BOT";
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);
    in.credential = "";
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);

    setup_intake();
    set_dest("api.github.com:8443");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    set_dest("api.github.com.evil.net");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    set_dest("githubusercontent.com");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    /* the policy allows uploads.github.com, the grant does not name it */
    set_dest("uploads.github.com");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    /* grant entries that do not parse match nothing */
    static char *odd[] = {"api.github.com/path", "0x7f.0.0.1:8443", "*", ""};
    SET_LIST(grant, destinations, odd);
    set_dest("api.github.com");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    set_dest("127.0.0.1:8443");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    grant.n_destinations = 0;
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
}

/* A relay grant may name {"*"} for credentials and destinations (the relay
 * does not know the gateway route's credential); an intake grant may not,
 * and "*" among other entries is no wildcard. Policy and issuer scope still
 * decide. */
static void test_relay_any(void)
{
    static char *any[] = {"*"};
    static char *any_and_more[] = {"*", "npm"};

    setup_relay();
    SET_LIST(grant, credentials, any);
    SET_LIST(grant, destinations, any);
    EXPECT(CS_ALLOW);
    set_dest("uploads.github.com"); /* in the policy, in no grant list */
    EXPECT(CS_ALLOW);
    set_dest("evil.example.net"); /* the policy is still the ceiling */
    EXPECT(CS_DENY_DESTINATION);
    set_dest("api.github.com");
    grant.scope = "crm/other"; /* the policy allows it, the issuer scope only crm/main */
    EXPECT(CS_DENY_ISSUER_SCOPE_ROUTE);
    grant.scope = "crm/main";
    in.credential = "other-cred"; /* outside the issuer scope's credentials */
    EXPECT(CS_DENY_ISSUER_SCOPE_CREDENTIAL);

    setup_relay();
    SET_LIST(grant, credentials, any_and_more);
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);
    setup_relay();
    SET_LIST(grant, destinations, any_and_more);
    EXPECT(CS_DENY_DEST_NOT_GRANTED);

    setup_intake();
    SET_LIST(grant, credentials, any);
    EXPECT(CS_DENY_CREDENTIAL_NOT_GRANTED);
    setup_intake();
    SET_LIST(grant, destinations, any);
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
}

static void test_destination_form(void)
{
    setup_intake();
    const char *bad[] = {"https://api.github.com@evil.net/",
                         "*.githubusercontent.com",
                         "",
                         "api.github.com:0",
                         "api github.com",
                         ("b\xc3\xbc"
                          "cher.example")};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_dest(bad[i]);
        EXPECT(CS_DENY_DEST_INVALID);
    }
    static const char nul[] = "api.github.com\0.evil.net";
    in.destination = nul;
    in.destination_len = sizeof nul - 1;
    EXPECT(CS_DENY_DEST_INVALID);

    /* the canonical address is allowed; any other spelling of it is refused,
     * and it never matches a name */
    set_dest("127.0.0.1:8443");
    EXPECT(CS_ALLOW);
    const char *forms[] = {"0177.0.0.1:8443", "2130706433:8443", "0x7f.1:8443",
                           "127.1:8443",      "127.0.0.1.:8443", "[::ffff:127.0.0.1]:8443"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        set_dest(forms[i]);
        EXPECT(CS_DENY_DEST_AMBIGUOUS);
    }
    static char *names_only[] = {"example.com", "*.example.com"};
    SET_LIST(pol, allowed_destinations, names_only);
    SET_LIST(grant, destinations, names_only);
    set_dest("0177.0.0.1");
    EXPECT(CS_DENY_DEST_AMBIGUOUS);
    set_dest("127.0.0.1");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
}

static void test_plain_http(void)
{
    setup_intake();
    set_dest("http://mirror.internal:8080/pkg");
    EXPECT(CS_DENY_PLAIN_HTTP);
    in.allow_plain_http = true;
    EXPECT(CS_ALLOW);
    /* https on the same host:port is a different destination */
    set_dest("mirror.internal:8080");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    /* the template allows http, but no pattern says http:// for this host */
    set_dest("http://api.github.com");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    static char *both[] = {"http://api.github.com"};
    SET_LIST(grant, destinations, both);
    EXPECT(CS_DENY_DESTINATION);
}

/* ---- the credential's BindingPolicy ---- */

static void test_binding_policy(void)
{
    static char *other_issuer[] = {"spiffe://airlock/intake/other"};
    static char *empty[] = {NULL};

    setup_intake();
    SET_LIST(pol, allowed_issuers, other_issuer);
    EXPECT(CS_DENY_ISSUER);
    pol.n_allowed_issuers = 0; /* an empty list allows nothing */
    EXPECT(CS_DENY_ISSUER);
    setup_relay();
    grant.issuer = "spiffe://airlock/relay/core-1"; /* policy allows relay/edge-* only */
    EXPECT(CS_DENY_ISSUER);

    setup_intake();
    grant.principal = "other/team";
    EXPECT(CS_DENY_PRINCIPAL);
    grant.principal = "acme/team-a/sub"; /* '*' does not cross '/' */
    EXPECT(CS_DENY_PRINCIPAL);
    grant.principal = "ACME/team-a";
    EXPECT(CS_DENY_PRINCIPAL);
    grant.principal = "acme";
    EXPECT(CS_DENY_PRINCIPAL);
    pol.n_allowed_principals = 0;
    grant.principal = "acme/team-a";
    EXPECT(CS_DENY_PRINCIPAL);

    setup_intake();
    in.caller = grant.holder = "spiffe://airlock/executor/data-1";
    EXPECT(CS_DENY_HOLDER);
    pol.n_allowed_holders = 0;
    in.caller = grant.holder = EXECUTOR;
    EXPECT(CS_DENY_HOLDER);

    setup_intake();
    grant.scope = "data"; /* issuer scope allows it, the credential does not */
    EXPECT(CS_DENY_POOL);
    grant.scope = "crm/main"; /* a route is no pool */
    EXPECT(CS_DENY_POOL);
    grant.scope = "ci";
    SET_LIST(pol, allowed_pools, empty);
    EXPECT(CS_DENY_POOL);

    setup_relay();
    grant.scope = "billing/main";
    EXPECT(CS_DENY_ROUTE);
    grant.scope = "ci"; /* a pool is no route */
    EXPECT(CS_DENY_ROUTE);
    grant.scope = "crm/main/x";
    EXPECT(CS_DENY_ROUTE);

    /* the grant names objects.example.com, the credential policy does not */
    setup_intake();
    set_dest("objects.example.com");
    EXPECT(CS_DENY_DESTINATION);
    pol.n_allowed_destinations = 0;
    set_dest("api.github.com");
    EXPECT(CS_DENY_DESTINATION);
}

static void test_lifetime(void)
{
    setup_intake();
    grant.expires_ms = grant.not_before_ms + 300000;
    EXPECT(CS_ALLOW);
    grant.expires_ms++;
    EXPECT(CS_DENY_LIFETIME);
    pol.max_grant_lifetime_ms = 0; /* credstore default applies */
    EXPECT(CS_ALLOW);
    grant.expires_ms = grant.not_before_ms + 3600001;
    EXPECT(CS_DENY_LIFETIME);
    in.default_max_lifetime_ms = 0; /* no cap here (al_grant_verify has its own) */
    EXPECT(CS_ALLOW);
    in.default_max_lifetime_ms = -5;
    EXPECT(CS_DENY_BAD_INPUT);
}

/* ---- the operator's issuer scope table ---- */

static void test_issuer_scope(void)
{
    static const char *only_b[] = {"acme/team-b"};
    static const char *only_data[] = {"data"};
    static const char *only_npm[] = {"npm"};
    static const char *only_other_route[] = {"crm/staging"};
    static const char *everyone[] = {"**"};

    setup_intake();
    in.n_scopes = 0;
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    in.scopes = NULL;
    in.n_scopes = 2;
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    setup_intake();
    scopes[0].issuer = "spiffe://airlock/intake/intake-1";
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    scopes[0].issuer = NULL; /* neither issuer nor key id: applies to nothing */
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    scopes[0].issuer = "";
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    setup_relay();
    scopes[1].issuer = "spiffe://airlock/relay/edge-2";
    EXPECT(CS_DENY_ISSUER_UNKNOWN);

    /* the policy allows all of acme, the issuer may only assert acme/team-b */
    setup_intake();
    SET_LIST(scopes[0], principals, only_b);
    EXPECT(CS_DENY_ISSUER_SCOPE_PRINCIPAL);
    scopes[0].n_principals = 0;
    EXPECT(CS_DENY_ISSUER_SCOPE_PRINCIPAL);
    /* ... and the other way round: the issuer may assert anyone, the policy not */
    setup_intake();
    SET_LIST(scopes[0], principals, everyone);
    grant.principal = "other/x";
    EXPECT(CS_DENY_PRINCIPAL);

    setup_intake();
    static char *any_pool[] = {"*"};
    SET_LIST(pol, allowed_pools, any_pool);
    SET_LIST(scopes[0], pools, only_data);
    EXPECT(CS_DENY_ISSUER_SCOPE_POOL);
    grant.scope = "data";
    EXPECT(CS_ALLOW);
    grant.scope = "gpu";
    scopes[0].pools = s_pools;
    EXPECT(CS_DENY_ISSUER_SCOPE_POOL);

    setup_relay();
    SET_LIST(scopes[1], routes, only_other_route);
    EXPECT(CS_DENY_ISSUER_SCOPE_ROUTE);
    setup_relay();
    scopes[1].n_routes = 0;
    SET_LIST(scopes[1], pools, s_pools); /* pools do not count for relay grants */
    EXPECT(CS_DENY_ISSUER_SCOPE_ROUTE);

    setup_intake();
    SET_LIST(scopes[0], credentials, only_npm);
    EXPECT(CS_DENY_ISSUER_SCOPE_CREDENTIAL);
    in.credential = "npm";
    EXPECT(CS_ALLOW);
}

static void test_issuer_scope_rows_not_mixed(void)
{
    static const char *team_a[] = {"acme/team-a"};
    static const char *other[] = {"other/*"};
    static const char *npm[] = {"npm"};
    static const char *github[] = {"github/*"};
    static struct cs_issuer_scope rows[2];

    setup_intake();
    /* row 0: team-a, but only npm; row 1: github, but only for other principals */
    rows[0] = scopes[0];
    SET_LIST(rows[0], principals, team_a);
    SET_LIST(rows[0], credentials, npm);
    rows[1] = scopes[0];
    SET_LIST(rows[1], principals, other);
    SET_LIST(rows[1], credentials, github);
    in.scopes = rows;
    in.n_scopes = 2;
    EXPECT(CS_DENY_ISSUER_SCOPE_CREDENTIAL); /* row 0 got furthest */
    in.credential = "npm";
    EXPECT(CS_ALLOW);
}

static void test_issuer_scope_key_id(void)
{
    setup_intake();
    scopes[0].issuer = NULL;
    scopes[0].key_id = "intake-key-1";
    EXPECT(CS_ALLOW);
    in.key_id = "intake-key-2";
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    in.key_id = NULL;
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
    /* both set: both must match */
    in.key_id = "intake-key-1";
    scopes[0].issuer = INTAKE;
    EXPECT(CS_ALLOW);
    scopes[0].issuer = "spiffe://airlock/intake/intake-9";
    EXPECT(CS_DENY_ISSUER_UNKNOWN);
}

/* ---- names ---- */

static void test_names(void)
{
    for (int c = CS_DENY_BAD_INPUT; c >= CS_DENY_ISSUER_SCOPE_CREDENTIAL; c--) {
        CU_ASSERT_STRING_NOT_EQUAL(cs_deny_name(c), "unknown");
        CU_ASSERT_NOT_EQUAL(cs_deny_error_reason(c),
                            AIRLOCK__V1__ERROR_REASON__ERROR_REASON_UNSPECIFIED);
        for (int d = c - 1; d >= CS_DENY_ISSUER_SCOPE_CREDENTIAL; d--)
            CU_ASSERT_STRING_NOT_EQUAL(cs_deny_name(c), cs_deny_name(d));
    }
    CU_ASSERT_STRING_EQUAL(cs_deny_name(0), "allow");
    CU_ASSERT_STRING_EQUAL(cs_deny_name(CS_DENY_WRONG_HOLDER), "wrong_holder");
    CU_ASSERT_STRING_EQUAL(cs_deny_name(-6000), "unknown");
    CU_ASSERT_STRING_EQUAL(cs_deny_name(-6022), "unknown");
    CU_ASSERT_STRING_EQUAL(cs_deny_name(-5001), "unknown");
    CU_ASSERT_EQUAL(cs_deny_error_reason(CS_DENY_WRONG_HOLDER),
                    AIRLOCK__V1__ERROR_REASON__ERROR_REASON_GRANT_HOLDER_MISMATCH);
    CU_ASSERT_EQUAL(cs_deny_error_reason(CS_DENY_DEST_NOT_GRANTED),
                    AIRLOCK__V1__ERROR_REASON__ERROR_REASON_GRANT_SCOPE_MISMATCH);
    CU_ASSERT_EQUAL(cs_deny_error_reason(CS_DENY_CALLER_ROLE),
                    AIRLOCK__V1__ERROR_REASON__ERROR_REASON_IDENTITY_NOT_ALLOWED);
    CU_ASSERT_EQUAL(cs_deny_error_reason(CS_DENY_ISSUER_SCOPE_PRINCIPAL),
                    AIRLOCK__V1__ERROR_REASON__ERROR_REASON_POLICY_DENIED);
    CU_ASSERT_EQUAL(cs_deny_error_reason(0), AIRLOCK__V1__ERROR_REASON__ERROR_REASON_UNSPECIFIED);
}

/* why never echoes grant or request contents */
static void test_why_is_fixed_text(void)
{
    setup_intake();
    grant.principal = "SECRET-LOOKING-principal";
    EXPECT(CS_DENY_PRINCIPAL);
    CU_ASSERT_PTR_NULL(strstr(why, "SECRET"));
    CU_ASSERT(strlen(why) > 0 && strlen(why) < CS_WHY_MAX);
    setup_intake();
    set_dest("secret-host.example:1");
    EXPECT(CS_DENY_DEST_NOT_GRANTED);
    CU_ASSERT_PTR_NULL(strstr(why, "secret"));
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("credstore policy", NULL, NULL);
    CU_add_test(s, "globs", test_glob);
    CU_add_test(s, "allow paths (intake/executor, relay/gateway)", test_allow);
    CU_add_test(s, "bad input", test_bad_input);
    CU_add_test(s, "non-edge caller role", test_caller_role);
    CU_add_test(s, "wrong holder", test_wrong_holder);
    CU_add_test(s, "issuer/holder role pairing", test_issuer_role);
    CU_add_test(s, "credential and destination named by the grant", test_grant_names);
    CU_add_test(s, "relay grants may name any credential/destination as {\"*\"}", test_relay_any);
    CU_add_test(s, "destination form: invalid, ambiguous IP spellings", test_destination_form);
    CU_add_test(s, "plain http", test_plain_http);
    CU_add_test(s, "binding policy lists", test_binding_policy);
    CU_add_test(s, "lifetime cap", test_lifetime);
    CU_add_test(s, "issuer scope intersection", test_issuer_scope);
    CU_add_test(s, "issuer scope rows are not mixed", test_issuer_scope_rows_not_mixed);
    CU_add_test(s, "issuer scope by key id", test_issuer_scope_key_id);
    CU_add_test(s, "deny names and error reasons", test_names);
    CU_add_test(s, "why is fixed text", test_why_is_fixed_text);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
