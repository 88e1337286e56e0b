/*
 * target: the request targets and host names the egress proxy is handed by
 * a sandbox (CONNECT authorities, absolute-form URLs, Host headers, SNI),
 * parsed strictly into one canonical form each, so that a policy compares
 * like with like and an address is recognised however it is spelled.
 *
 * Hosts. A DNS name is ASCII letters, digits and '-' in dot-separated labels
 * of 1..63 bytes (no label starting or ending with '-'), 253 bytes at most,
 * lowercased; one trailing dot is dropped. Non-ASCII names are refused (the
 * client converts to the xn-- form: IDNA is its business). A name whose last
 * label is a number (decimal digits, or 0x and hex digits) is an IPv4
 * address in one of the forms inet_aton() accepts: 1 to 4 parts, each
 * decimal, octal (leading 0) or hex (0x), the last part filling the
 * remaining bytes ("2130706433", "0177.0.0.1", "0x7f.1", "127.1" are all
 * 127.0.0.1); one that does not parse as such is refused as ambiguous. IPv6
 * literals come in brackets and are written back as RFC 5952 text; zone ids
 * are refused. The canonical text of an IPv4 address is its dotted quad.
 *
 * Authorities are "host[:port]" with a decimal port 1..65535 (no leading
 * zero, not empty); userinfo is refused. Absolute-form URLs are
 * "http://authority[path][?query]" (the scheme in any case); https:// in
 * absolute-form is refused (a client asks for TLS with CONNECT), and so are
 * other schemes, fragments, characters outside RFC 3986 and bad
 * percent-encoding.
 *
 * Paths for prefix checks (eg_path_normalize): the path part of an
 * origin-form target with every percent-encoded unreserved character
 * decoded, %2F and %5C (and a raw backslash) read as '/', other encodings
 * kept (upper-case hex), then dot segments removed (RFC 3986 5.2.4), where a
 * segment whose part before ';' is "." or ".." counts as one ("..;" climbs
 * on some servers). Encoded NUL, and what a second decoding would turn into
 * '.', '/', '\', NUL or another escape ("%252e", "%25%32e", "%2541"), are
 * refused. A path inside an allowed prefix after this stays inside
 * it under any of the usual server interpretations; the request itself is
 * forwarded unchanged.
 *
 * Every function is pure: no allocation, no state; "why" is a static string
 * fit for a one-line error to the agent.
 */
#ifndef EG_TARGET_H
#define EG_TARGET_H

#include <stddef.h>
#include <stdint.h>

#define EG_HOST_MAX     254 /* canonical host text with its NUL */
#define EG_HOSTPORT_MAX (EG_HOST_MAX + 8)

enum eg_host_kind { EG_HOST_NAME, EG_HOST_IPV4, EG_HOST_IPV6 };

struct eg_host {
    enum eg_host_kind kind;
    char name[EG_HOST_MAX]; /* lowercase name, dotted quad, or RFC 5952 IPv6 (no brackets) */
    uint8_t addr[16];       /* IPV4: first 4 bytes; IPV6: 16 bytes */
};

struct eg_authority {
    struct eg_host host;
    int port;
};

/* Parses a host (IPv6 in brackets) from s[0..n). Returns 0 or AL_ERR_INVAL
 * with *why. */
int eg_host_parse(const char *s, size_t n, struct eg_host *out, const char **why);

/* Parses "host[:port]"; default_port when the port is absent (0: the port
 * is required). Returns 0 or AL_ERR_INVAL with *why. */
int eg_authority_parse(const char *s, size_t n, int default_port, struct eg_authority *out,
                       const char **why);

/* Parses an absolute-form target "http://authority[/path][?query]" (port
 * default 80) and writes the origin-form target ("/path?query", "/" when the
 * path is empty) into origin (size cap, NUL-terminated). Returns 0,
 * AL_ERR_INVAL with *why, or AL_ERR_TOOBIG (origin too small). */
int eg_url_parse(const char *s, size_t n, struct eg_authority *out, char *origin, size_t cap,
                 const char **why);

/* Checks an origin-form target ("/path[?query]"): RFC 3986 characters, good
 * percent-encoding, no fragment. Returns 0 or AL_ERR_INVAL with *why. */
int eg_origin_check(const char *s, size_t n, const char **why);

/* The normalised path of origin-form target s[0..n) for prefix checks (see
 * above) into out (size cap >= n + 1, NUL-terminated: never longer than s).
 * Returns 0, AL_ERR_INVAL with *why, or AL_ERR_TOOBIG. */
int eg_path_normalize(const char *s, size_t n, char *out, size_t cap, const char **why);

/* Is normalised path p inside prefix q (p == q, or p continues q at a '/'
 * boundary: "/a" holds "/a/b" but not "/ab"; "/a/" holds "/a/b")? */
int eg_path_has_prefix(const char *p, const char *q);

/* "host:port" with an IPv6 host in brackets, into buf (EG_HOSTPORT_MAX
 * suffices). Returns buf. */
char *eg_authority_format(const struct eg_authority *a, char *buf, size_t n);

/* Same host (kind and canonical text)? */
int eg_host_equal(const struct eg_host *a, const struct eg_host *b);

#endif
