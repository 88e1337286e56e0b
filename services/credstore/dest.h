/*
 * dest: destinations a credential may be sent to: parsing, normalizing,
 * formatting and matching. Pure functions over caller buffers; no I/O, no
 * allocation, no name resolution.
 *
 * Accepted text (length-delimited; never NUL-terminated by necessity):
 *
 *   host                      "api.example.com"
 *   host:port                 "api.example.com:8443"
 *   scheme://host[:port][/]   "https://api.example.com", "http://10.0.0.7:8080/"
 *   [v6][:port]               "[2001:db8::1]:443", "https://[::1]"
 *   *.suffix[:port]           patterns only (policy and grant entries)
 *   scheme://host[:port]/path requests only; the path is ignored
 *
 * Scheme and port: the scheme is "https" or "http" (case-insensitive);
 * without one it is https. The scheme is never inferred from the port, so
 * "host:80" is https on port 80 and plain HTTP must always be spelled
 * "http://". Without a port it is 443 (https) or 80 (http). Every string
 * therefore has exactly one meaning, for requests and patterns alike.
 * Ports are 1..65535 in plain decimal: no sign, no spaces, no leading zero.
 *
 * Host names are normalized to lowercase with ONE trailing dot removed, and
 * must then be 1..253 characters of labels of 1..63 characters of [a-z0-9-],
 * not starting or ending with '-'. Internationalized names are accepted only
 * in their ASCII (punycode "xn--") form, as-is. Raw non-ASCII bytes are
 * rejected: there is no IDNA library here, and mapping Unicode to ASCII has
 * several incompatible rules (IDNA2003, IDNA2008, UTS #46), so two parties
 * could read one Unicode name as two different hosts; the ASCII form has one
 * reading. Also rejected anywhere in the input: bytes outside 0x21..0x7e
 * (whitespace, control bytes, NUL, DEL, non-ASCII) and the backslash (some
 * URL parsers read it as '/'); in the authority: '%' escapes and userinfo
 * ("user@host": "https://api.example.com@evil.net/" names evil.net).
 *
 * IP literals. A host whose last label is numeric (all digits, or "0x"
 * followed by hex digits) is an IPv4 address and nothing else, parsed the way
 * inet_aton(3) and WHATWG URL parsers do: one to four parts, each decimal,
 * octal (leading 0) or hex (0x), the last part filling the remaining bytes.
 * So "2130706433", "0177.0.0.1", "0x7f.1", "127.1" and "127.0.0.1." all
 * denote 127.0.0.1; a numeric host that does not parse ("1.2.3.256",
 * "example.123") is rejected rather than taken as a name. IPv4 is stored as
 * the canonical dotted quad, so matching compares addresses, never
 * spellings: "0177.0.0.1" can never match a name such as "example.com", and
 * does match a pattern for "127.0.0.1". Any spelling other than the
 * canonical dotted quad is marked CS_DEST_F_NONCANONICAL: patterns refuse it
 * outright, requests carry the mark so the policy can refuse them (it does:
 * different software reads such strings differently, so they are a
 * smuggling tool, not something a legitimate edge sends). IPv6 must be in
 * brackets, without zone id, and is stored as inet_ntop(3) prints it; an
 * IPv4-mapped address ("[::ffff:127.0.0.1]", "[::ffff:7f00:1]") is the IPv4
 * address, marked CS_DEST_F_NONCANONICAL.
 *
 * Wildcards (patterns only): a leading "*." matches one or more extra labels
 * in front of the suffix: "*.example.com" matches "api.example.com" and
 * "a.b.example.com", never "example.com", "evilexample.com" or
 * "api.example.com.evil.net". No other '*' is allowed, and never on an IP.
 */
#ifndef CS_DEST_H
#define CS_DEST_H

#include <stddef.h>
#include <stdint.h>

#define CS_DEST_INPUT_MAX 2048 /* longest input accepted (requests may carry a path) */
#define CS_DEST_NAME_MAX  253  /* longest host name, trailing dot removed */
#define CS_DEST_LABEL_MAX 63   /* longest label */
#define CS_DEST_HOST_MAX  256  /* buffer size for any normalized host plus NUL */
#define CS_DEST_STRLEN    272  /* buffer size for any cs_dest_format() output plus NUL */

/* What is being parsed; decides what is allowed. */
enum cs_dest_mode {
    /* An entry of BindingPolicy.allowed_destinations: wildcards allowed; no
     * path; non-canonical IPv4 spellings rejected. */
    CS_DEST_POLICY = 1,
    /* An entry of Grant.destinations: the same rules as CS_DEST_POLICY (a
     * grant narrows the policy with the same kind of patterns). */
    CS_DEST_GRANT,
    /* The concrete destination of a Resolve request (or of a use at the
     * edge): no wildcards; a path after the authority is accepted and
     * ignored; non-canonical IPv4 accepted but marked. */
    CS_DEST_REQUEST
};

enum cs_dest_kind { CS_DEST_NAME = 1, CS_DEST_IPV4, CS_DEST_IPV6 };

enum cs_dest_scheme { CS_SCHEME_HTTPS = 1, CS_SCHEME_HTTP };

/* cs_dest.flags */
#define CS_DEST_F_WILDCARD     0x1u /* pattern "*.host": host holds the suffix */
#define CS_DEST_F_NONCANONICAL 0x2u /* IPv4 spelled other than as a dotted quad */
#define CS_DEST_F_SCHEME       0x4u /* the scheme was written out */
#define CS_DEST_F_PORT         0x8u /* the port was written out */

/* A parsed destination. Plain data: copy it freely, no cleanup. */
struct cs_dest {
    enum cs_dest_kind kind;
    enum cs_dest_scheme scheme; /* effective scheme (https when not written) */
    uint16_t port;              /* effective port, 1..65535 */
    unsigned flags;             /* CS_DEST_F_* */
    size_t hostlen;             /* strlen(host) */
    /* Normalized host: lowercase name without trailing dot (for a wildcard,
     * the suffix after "*."), dotted-quad IPv4, or IPv6 without brackets. */
    char host[CS_DEST_HOST_MAX];
};

/*
 * Parses s[0..len) (borrowed; may contain any bytes, NUL included, which are
 * rejected) as a destination under mode's rules (see above) into *out.
 * Returns 0, AL_ERR_TOOBIG (len > CS_DEST_INPUT_MAX) or AL_ERR_INVAL (NULL
 * arguments, empty, or anything the rules reject). On failure *out is zeroed.
 */
int cs_dest_parse(const char *s, size_t len, enum cs_dest_mode mode, struct cs_dest *out);

/*
 * Writes d's canonical text into buf (size n): "[*.]host:port" for https,
 * "http://[*.]host:port" for http, IPv6 in brackets, the port always
 * written. Parsing the output again yields the same kind, scheme, port, host
 * and wildcard flag, without CS_DEST_F_NONCANONICAL. n >= CS_DEST_STRLEN
 * always suffices. Returns the length written (without NUL), AL_ERR_TOOBIG
 * (buf too small; buf then holds "") or AL_ERR_INVAL (NULL or malformed d).
 */
int cs_dest_format(const struct cs_dest *d, char *buf, size_t n);

/*
 * Returns 1 if the concrete destination d is allowed by pattern, else 0.
 * Scheme, port and address family must be equal; hosts must be equal, or,
 * for a wildcard pattern, d's host name must end with "." + the suffix (one
 * or more extra labels). A wildcard d never matches anything. IPv4 matches by
 * address; CS_DEST_F_NONCANONICAL is not looked at here (the policy refuses
 * such requests before matching). Borrows both; NULL matches nothing.
 */
int cs_dest_match(const struct cs_dest *pattern, const struct cs_dest *d);

#endif
