/*
 * addrpolicy: which addresses a gateway route may dial (see upstream.h for
 * the list and its reasons). Pure functions over the caller's buffers.
 *
 * An IPv4 address is denied when it falls in a denied range and no IPv4
 * allow entry covers it. An IPv6 address is denied when it falls in a
 * denied IPv6 range and no IPv6 allow entry covers it, OR when it embeds an
 * IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) that is
 * itself denied by the IPv4 rule. So "::ffff:127.0.0.1" needs both an IPv6
 * entry for the mapped form and "127.0.0.1/32"; an entry for
 * "64:ff9b::/96" never lets 64:ff9b::7f00:1 (loopback through NAT64) out.
 *
 * Where an embedding has more than one possible position, every candidate
 * is judged: the local-use NAT64 prefix 64:ff9b:1::/48 may be subdivided
 * into /56, /64 or /96 translation prefixes (RFC 8215, RFC 6052 2.2), and a
 * Teredo address carries both its server's address and its client's
 * (obfuscated) address.
 *
 * Egress mode (rl_addr_denied_ex with RL_ADDR_DENY_PRIVATE and
 * RL_ADDR_NO_OVERRIDE, used by the sandbox egress proxy): the private ranges
 * (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 and the deprecated
 * site-local fec0::/10) are denied too unless an allow entry covers them,
 * and allow entries never re-open the ranges above (loopback, link-local,
 * metadata, the embedding forms ...): an operator's allow list names the
 * internal networks a destination lives in, nothing else. Without flags
 * the gateway's behaviour is unchanged.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "al_err.h"
#include "upstream.h"

struct range {
    uint8_t net[16];
    unsigned prefix;
};

/* IPv4 ranges, address in the first four bytes. */
static const struct range deny4[] = {
    {{0, 0, 0, 0}, 8},      /* "this network"; 0.0.0.0 reaches the local host */
    {{127, 0, 0, 0}, 8},    /* loopback */
    {{169, 254, 0, 0}, 16}, /* link-local, cloud metadata 169.254.169.254 */
    {{100, 64, 0, 0}, 10},  /* CGNAT shared space */
    {{192, 0, 0, 0}, 24},   /* IETF protocol assignments (NAT64 discovery ...) */
    {{198, 18, 0, 0}, 15},  /* benchmarking */
    {{224, 0, 0, 0}, 4},    /* multicast */
    {{240, 0, 0, 0}, 4},    /* reserved, broadcast */
};

static const struct range deny6[] = {
    {{0}, 128},                                              /* :: unspecified */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128}, /* ::1 loopback */
    {{0xfe, 0x80}, 10},                                      /* link-local */
    {{0xff}, 8},                                             /* multicast */
    {{0x00, 0x64, 0xff, 0x9b}, 96},                          /* NAT64 well-known */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48},              /* NAT64 local-use */
    {{0x20, 0x02}, 16},                                      /* 6to4 */
    {{0x20, 0x01, 0x00, 0x00}, 32},                          /* Teredo */
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96},        /* IPv4-mapped */
    {{0}, 96},                                               /* IPv4-compatible */
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54}, 128}, /* AWS metadata */
};

static const struct range private4[] = {
    {{10, 0, 0, 0}, 8},
    {{172, 16, 0, 0}, 12},
    {{192, 168, 0, 0}, 16},
};

static const struct range private6[] = {
    {{0xfc}, 7},        /* unique local */
    {{0xfe, 0xc0}, 10}, /* site-local (deprecated, still routable somewhere) */
};

static int prefix_match(const uint8_t *a, const uint8_t *net, unsigned prefix)
{
    unsigned full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

static int in_ranges(const uint8_t *a, const struct range *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_match(a, r[i].net, r[i].prefix))
            return 1;
    return 0;
}

static int allowed(int family, const uint8_t *a, const struct rl_cidr *allow, size_t nallow)
{
    for (size_t i = 0; allow && i < nallow; i++)
        if (allow[i].family == family && prefix_match(a, allow[i].addr, allow[i].prefix))
            return 1;
    return 0;
}

static int denied4(const uint8_t *a, const struct rl_cidr *allow, size_t nallow, unsigned flags)
{
    if (in_ranges(a, deny4, sizeof(deny4) / sizeof(deny4[0])))
        return (flags & RL_ADDR_NO_OVERRIDE) || !allowed(AF_INET, a, allow, nallow);
    if ((flags & RL_ADDR_DENY_PRIVATE) &&
        in_ranges(a, private4, sizeof(private4) / sizeof(private4[0])))
        return !allowed(AF_INET, a, allow, nallow);
    return 0;
}

/* Collects the IPv4 addresses a 16-byte IPv6 address embeds. Returns how
 * many were written to v4 (room for 6). */
static size_t embedded_v4(const uint8_t *a, uint8_t v4[][4])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t zero12[12] = {0};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    static const uint8_t nat64_local[6] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
    size_t n = 0;

    if (memcmp(a, zero12, 12) == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] == 1) {
        /* ::1 is the IPv6 loopback with an entry of its own, not 0.0.0.1 */
    } else if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero12, 12) == 0 ||
               memcmp(a, nat64, 12) == 0) {
        memcpy(v4[n++], a + 12, 4);
    } else if (memcmp(a, nat64_local, 6) == 0) {
        /* RFC 6052 positions for /48, /56, /64 and /96 (bits 64..71 are the
         * reserved "u" octet, skipped) */
        const uint8_t p48[4] = {a[6], a[7], a[9], a[10]};
        const uint8_t p56[4] = {a[7], a[9], a[10], a[11]};
        memcpy(v4[n++], p48, 4);
        memcpy(v4[n++], p56, 4);
        memcpy(v4[n++], a + 9, 4);
        memcpy(v4[n++], a + 12, 4);
    } else if (a[0] == 0x20 && a[1] == 0x02) {
        memcpy(v4[n++], a + 2, 4); /* 6to4: 2002:AABB:CCDD::/48 */
    } else if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0) {
        memcpy(v4[n++], a + 4, 4); /* Teredo server */
        for (int i = 0; i < 4; i++)
            v4[n][i] = (uint8_t)~a[12 + i]; /* Teredo client, obfuscated */
        n++;
    }
    return n;
}

int rl_addr_denied(const struct sockaddr *sa, const struct rl_cidr *allow, size_t nallow)
{
    return rl_addr_denied_ex(sa, allow, nallow, 0);
}

int rl_addr_denied_ex(const struct sockaddr *sa, const struct rl_cidr *allow, size_t nallow,
                      unsigned flags)
{
    uint8_t v4[6][4];
    size_t n;

    if (!sa)
        return 1;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        uint8_t a[4];
        memcpy(a, &s4->sin_addr, 4);
        return denied4(a, allow, nallow, flags);
    }
    if (sa->sa_family != AF_INET6)
        return 1;
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    uint8_t a[16];
    memcpy(a, &s6->sin6_addr, 16);
    if (in_ranges(a, deny6, sizeof(deny6) / sizeof(deny6[0])) &&
        ((flags & RL_ADDR_NO_OVERRIDE) || !allowed(AF_INET6, a, allow, nallow)))
        return 1;
    if ((flags & RL_ADDR_DENY_PRIVATE) &&
        in_ranges(a, private6, sizeof(private6) / sizeof(private6[0])) &&
        !allowed(AF_INET6, a, allow, nallow))
        return 1;
    n = embedded_v4(a, v4);
    for (size_t i = 0; i < n; i++)
        if (denied4(v4[i], allow, nallow, flags))
            return 1;
    return 0;
}

/* Decimal prefix length: 1 to 3 digits, no sign, no leading zero. */
static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
    size_t len = strlen(s);
    unsigned v = 0;

    if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
        return AL_ERR_INVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return AL_ERR_INVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > max)
        return AL_ERR_INVAL;
    *out = v;
    return 0;
}

int rl_cidr_parse(const char *s, struct rl_cidr *out)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash;
    struct rl_cidr c;
    size_t alen;

    if (!out)
        return AL_ERR_INVAL;
    memset(out, 0, sizeof(*out)); /* zeroed on failure */
    memset(&c, 0, sizeof(c));
    if (!s)
        return AL_ERR_INVAL;
    slash = strchr(s, '/');
    if (!slash)
        return AL_ERR_INVAL; /* the prefix length is always spelled out */
    alen = (size_t)(slash - s);
    if (alen == 0 || alen >= sizeof(addr))
        return AL_ERR_INVAL;
    memcpy(addr, s, alen);
    addr[alen] = '\0';
    /* inet_pton takes dotted quads without leading zeros only, and no zone
     * ids, spaces or brackets */
    if (strchr(addr, ':')) {
        if (inet_pton(AF_INET6, addr, c.addr) != 1)
            return AL_ERR_INVAL;
        c.family = AF_INET6;
    } else {
        if (inet_pton(AF_INET, addr, c.addr) != 1)
            return AL_ERR_INVAL;
        c.family = AF_INET;
    }
    if (parse_prefix(slash + 1, c.family == AF_INET ? 32 : 128, &c.prefix) < 0)
        return AL_ERR_INVAL;
    /* host bits set ("10.1.2.3/24") is a typo or a misunderstanding: refuse
     * rather than guess which of the two was meant */
    for (unsigned bit = c.prefix; bit < (c.family == AF_INET ? 32u : 128u); bit++)
        if (c.addr[bit / 8] & (0x80 >> (bit % 8)))
            return AL_ERR_INVAL;
    *out = c;
    return 0;
}
