/*
 * al_pki: development CA and leaf issuance with OpenSSL 3 (EVP and X509v3 APIs
 * only), SPIFFE id extraction and validation, and the key/cert file helpers.
 *
 * Files are read whole into a capped buffer (secure heap for private keys,
 * cleared on free) before parsing, and written either exclusively or through a
 * temp file + rename so a reader never sees half a key. Public functions that
 * fail clear the thread's OpenSSL error queue so a later SSL_get_error() on the
 * same thread is not misled.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "al_err.h"
#include "al_log.h"
#include "al_pki.h"

#define KEY_FILE_CAP  (64 * 1024)   /* no PEM private key we accept is near this */
#define CERT_FILE_CAP (1024 * 1024) /* room for a long chain file */
#define BACKDATE_SECS 300           /* tolerate small clock differences between hosts */

static const char *const roles[] = {"intake",    "executor", "relay",  "gateway",
                                    "credstore", "admin",    "client", "test"};

static const char spiffe_prefix[] = "spiffe://airlock/";

static void set_why(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
}

/* Formats a path into buf (PATH_MAX bytes); AL_ERR_TOOBIG when it does not fit. */
__attribute__((format(printf, 2, 3))) static int pathf(char *buf, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, PATH_MAX, fmt, ap);
    va_end(ap);
    return (n < 0 || n >= PATH_MAX) ? AL_ERR_TOOBIG : 0;
}

static int path_exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 || errno != ENOENT;
}

/* ---- names ---- */

int al_pki_role_valid(const char *role)
{
    if (!role)
        return 0;
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        if (strcmp(role, roles[i]) == 0)
            return 1;
    }
    return 0;
}

int al_pki_name_valid(const char *name)
{
    size_t n = 0;

    if (!name)
        return 0;
    for (; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok || n >= 64)
            return 0;
    }
    return n > 0;
}

static int copy_out(char *dst, size_t dstlen, const char *src, size_t len)
{
    if (!dst)
        return 0;
    if (dstlen <= len)
        return AL_ERR_TOOBIG;
    memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

int al_pki_parse_spiffe(const char *id, char *role, size_t rolelen, char *name, size_t namelen)
{
    char rb[AL_PKI_ROLE_MAX];
    const char *r, *slash;
    size_t rl;
    int rc;

    if (!id || strncmp(id, spiffe_prefix, sizeof spiffe_prefix - 1) != 0)
        return AL_ERR_INVAL;
    r = id + sizeof spiffe_prefix - 1;
    slash = strchr(r, '/');
    if (!slash)
        return AL_ERR_INVAL;
    rl = (size_t)(slash - r);
    if (rl == 0 || rl >= sizeof rb)
        return AL_ERR_INVAL;
    memcpy(rb, r, rl);
    rb[rl] = '\0';
    if (!al_pki_role_valid(rb) || !al_pki_name_valid(slash + 1))
        return AL_ERR_INVAL;
    rc = copy_out(role, rolelen, rb, rl);
    if (rc == 0)
        rc = copy_out(name, namelen, slash + 1, strlen(slash + 1));
    return rc;
}

int al_pki_spiffe_id(const X509 *cert, char *buf, size_t n)
{
    GENERAL_NAMES *gens;
    const unsigned char *found = NULL;
    int crit = -1, found_len = 0, rc = 0;

    if (!cert || !buf || !n)
        return AL_ERR_INVAL;
    gens = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (!gens) { /* crit == -1: absent; otherwise duplicated or unparsable */
        ERR_clear_error();
        return crit == -1 ? AL_ERR_NOTFOUND : AL_ERR_AUTH;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(gens) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        const unsigned char *d;
        int len;
        if (g->type != GEN_URI)
            continue;
        d = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (len < 9 || memcmp(d, "spiffe://", 9) != 0)
            continue;
        for (int j = 0; j < len; j++) {
            if (d[j] <= 0x20 || d[j] >= 0x7f)
                rc = AL_ERR_AUTH;
        }
        if (found) /* SPIFFE: exactly one URI SAN; two ids is no id */
            rc = AL_ERR_AUTH;
        found = d;
        found_len = len;
    }
    if (rc == 0 && !found)
        rc = AL_ERR_NOTFOUND;
    if (rc == 0)
        rc = copy_out(buf, n, (const char *)found, (size_t)found_len);
    GENERAL_NAMES_free(gens);
    return rc;
}

/* ---- file writing ---- */

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* fchmod (the mode must not depend on umask), write, fsync, close. Closes fd always. */
static int fill_fd(int fd, const void *data, size_t len, mode_t mode)
{
    int rc = 0;

    if (fchmod(fd, mode) < 0)
        rc = -errno;
    if (rc == 0)
        rc = write_all(fd, data, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static int write_exclusive(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd, rc;

    /* O_EXCL also refuses to follow a symlink planted at path. */
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0600);
    if (fd < 0)
        return errno == EEXIST ? AL_ERR_EXISTS : -errno;
    rc = fill_fd(fd, data, len, mode);
    if (rc < 0)
        unlink(path);
    return rc;
}

static int write_replace(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[PATH_MAX];
    int fd, rc;

    rc = pathf(tmp, "%s.tmp.XXXXXX", path);
    if (rc < 0)
        return rc;
    fd = mkostemp(tmp, O_CLOEXEC); /* created 0600: never wider than the final mode */
    if (fd < 0)
        return -errno;
    rc = fill_fd(fd, data, len, mode);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

int al_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, unsigned flags)
{
    if (!path || (len && !data))
        return AL_ERR_INVAL;
    if (flags & AL_PKI_OVERWRITE)
        return write_replace(path, data, len, mode);
    return write_exclusive(path, data, len, mode);
}

static int write_bio(const char *path, BIO *b, mode_t mode, unsigned flags)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);

    if (n <= 0)
        return AL_ERR_CRYPTO;
    return al_pki_write_file(path, p, (size_t)n, mode, flags);
}

int al_pki_write_private_key(const char *path, EVP_PKEY *pk, unsigned flags)
{
    BIO *b = BIO_new(BIO_s_secmem());
    int rc = AL_ERR_CRYPTO;

    if (!b)
        return AL_ERR_NOMEM;
    if (PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL) == 1)
        rc = write_bio(path, b, 0600, flags);
    BIO_free(b);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int al_pki_write_public_key(const char *path, EVP_PKEY *pk, unsigned flags)
{
    BIO *b = BIO_new(BIO_s_mem());
    int rc = AL_ERR_CRYPTO;

    if (!b)
        return AL_ERR_NOMEM;
    if (PEM_write_bio_PUBKEY(b, pk) == 1)
        rc = write_bio(path, b, 0644, flags);
    BIO_free(b);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int al_pki_write_cert(const char *path, X509 *cert, unsigned flags)
{
    BIO *b = BIO_new(BIO_s_mem());
    int rc = AL_ERR_CRYPTO;

    if (!b)
        return AL_ERR_NOMEM;
    if (PEM_write_bio_X509(b, cert) == 1)
        rc = write_bio(path, b, 0644, flags);
    BIO_free(b);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

/* ---- file loading ---- */

/*
 * Reads path whole (at most cap bytes) into a memory BIO. With secret set the
 * bytes sit in OpenSSL's secure heap and are cleared when *data is freed with
 * OPENSSL_secure_clear_free(*data, *size); otherwise free with OPENSSL_free.
 */
static int read_whole(const char *path, size_t cap, int secret, char **data, size_t *len)
{
    char *buf = secret ? OPENSSL_secure_malloc(cap) : OPENSSL_malloc(cap);
    struct stat st;
    size_t n = 0;
    int fd, rc = 0;

    if (!buf)
        return AL_ERR_NOMEM;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT ? AL_ERR_NOTFOUND : -errno;
        goto out;
    }
    if (secret && fstat(fd, &st) == 0 && (st.st_mode & 077)) {
        char q[160];
        AL_LOG_WARN("pki.key_mode", "path=%s mode=%03o reason=\"readable by group or others\"",
                    al_log_quote(q, sizeof q, path, strlen(path)), (unsigned)(st.st_mode & 0777));
    }
    while (rc == 0) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        else if (r == 0)
            break;
        else if ((n += (size_t)r) == cap)
            rc = AL_ERR_TOOBIG;
    }
    close(fd);
out:
    if (rc < 0) {
        if (secret)
            OPENSSL_secure_clear_free(buf, cap);
        else
            OPENSSL_free(buf);
        return rc;
    }
    *data = buf;
    *len = n;
    return 0;
}

/* Refuses to prompt for a passphrase: our key files are never encrypted. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

int al_pki_load_private_key(const char *path, EVP_PKEY **out)
{
    char *data = NULL;
    size_t len = 0;
    BIO *b = NULL;
    int rc;

    if (!path || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = read_whole(path, KEY_FILE_CAP, 1, &data, &len);
    if (rc < 0)
        return rc;
    b = BIO_new_mem_buf(data, (int)len);
    if (!b)
        rc = AL_ERR_NOMEM;
    else if (!(*out = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)))
        rc = AL_ERR_CRYPTO;
    BIO_free(b);
    OPENSSL_secure_clear_free(data, KEY_FILE_CAP);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int al_pki_load_public_key(const char *path, EVP_PKEY **out)
{
    char *data = NULL;
    size_t len = 0;
    BIO *b = NULL;
    int rc;

    if (!path || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = read_whole(path, KEY_FILE_CAP, 0, &data, &len);
    if (rc < 0)
        return rc;
    b = BIO_new_mem_buf(data, (int)len);
    if (!b)
        rc = AL_ERR_NOMEM;
    else if (!(*out = PEM_read_bio_PUBKEY(b, NULL, no_passphrase, NULL)))
        rc = AL_ERR_CRYPTO;
    BIO_free(b);
    OPENSSL_free(data);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int al_pki_load_cert(const char *path, X509 **out)
{
    char *data = NULL;
    size_t len = 0;
    BIO *b = NULL;
    int rc;

    if (!path || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    rc = read_whole(path, CERT_FILE_CAP, 0, &data, &len);
    if (rc < 0)
        return rc;
    b = BIO_new_mem_buf(data, (int)len);
    if (!b)
        rc = AL_ERR_NOMEM;
    else if (!(*out = PEM_read_bio_X509(b, NULL, no_passphrase, NULL)))
        rc = AL_ERR_CRYPTO;
    BIO_free(b);
    OPENSSL_free(data);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

/* ---- certificate building ---- */

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    int ok;

    if (!e)
        return AL_ERR_CRYPTO;
    ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok ? 0 : AL_ERR_CRYPTO;
}

/* Random positive 128-bit serial (RFC 5280 allows up to 20 octets). */
static int set_random_serial(X509 *x)
{
    unsigned char r[16];
    BIGNUM *bn;
    int ok;

    if (RAND_bytes(r, sizeof r) != 1)
        return AL_ERR_CRYPTO;
    r[0] = (unsigned char)((r[0] & 0x7f) | 0x40); /* positive, full length */
    bn = BN_bin2bn(r, sizeof r, NULL);
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : AL_ERR_CRYPTO;
}

static int set_subject(X509 *x, const char *ou, const char *cn)
{
    X509_NAME *n = X509_get_subject_name(x);
    const unsigned char *o = (const unsigned char *)"Airlock";

    if (!X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, o, -1, -1, 0))
        return AL_ERR_CRYPTO;
    if (ou &&
        !X509_NAME_add_entry_by_txt(n, "OU", MBSTRING_ASC, (const unsigned char *)ou, -1, -1, 0))
        return AL_ERR_CRYPTO;
    if (!X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0))
        return AL_ERR_CRYPTO;
    return 0;
}

/* A v3 certificate for pk with subject (ou, cn), issued by ca (NULL: self), valid days. */
static int new_cert(EVP_PKEY *pk, const char *ou, const char *cn, X509 *ca, long days, X509 **out)
{
    X509 *x = X509_new();
    int rc = AL_ERR_CRYPTO;

    if (!x)
        return AL_ERR_NOMEM;
    if (!X509_set_version(x, X509_VERSION_3) || set_random_serial(x) < 0 ||
        set_subject(x, ou, cn) < 0)
        goto out;
    if (!X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : X509_get_subject_name(x)))
        goto out;
    if (!X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_SECS) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
        goto out;
    if (ca && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(ca)) > 0 &&
        !X509_set1_notAfter(x, X509_get0_notAfter(ca)))
        goto out;
    if (!X509_set_pubkey(x, pk))
        goto out;
    *out = x;
    x = NULL;
    rc = 0;
out:
    X509_free(x);
    return rc;
}

static int ca_extensions(X509 *x)
{
    X509V3_CTX ctx;
    int rc;

    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    rc = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_subject_key_identifier, "hash");
    if (rc == 0) /* needs the subject key id above: this certificate is its own issuer */
        rc = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
    return rc;
}

/* A DNS host name: labels of [A-Za-z0-9-] (1-63, no '-' at either end)
 * joined by '.', at most 253 characters. */
static int dns_name_ok(const char *s)
{
    size_t n = strlen(s), label = 0;

    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return 0;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c == '-' && label > 0)) {
            label++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* "DNS:<name>" or "IP:<literal>": nothing else can reach OpenSSL's SAN
 * syntax (a ',' would add SANs of its own). */
static int san_ok(const char *s)
{
    unsigned char buf[16];

    if (strncmp(s, "DNS:", 4) == 0)
        return dns_name_ok(s + 4);
    if (strncmp(s, "IP:", 3) == 0)
        return inet_pton(AF_INET, s + 3, buf) == 1 || inet_pton(AF_INET6, s + 3, buf) == 1;
    return 0;
}

static int leaf_extensions(X509 *x, X509 *ca, const char *role, const char *name, unsigned flags,
                           const char *const *sans)
{
    int server = (flags & AL_PKI_SERVER) != 0, rc;
    char san[AL_PKI_ID_MAX + 64 + AL_PKI_SANS_MAX * 260];
    size_t o;
    X509V3_CTX ctx;

    snprintf(san, sizeof san, "URI:%s%s/%s%s", spiffe_prefix, role, name,
             server ? ",DNS:localhost,IP:127.0.0.1,IP:::1" : "");
    o = strlen(san);
    for (size_t i = 0; sans && sans[i]; i++) { /* checked by the caller: fits */
        int w = snprintf(san + o, sizeof san - o, ",%s", sans[i]);
        o += (size_t)w;
    }
    X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
    rc = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_ext_key_usage, server ? "serverAuth,clientAuth" : "clientAuth");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_subject_alt_name, san);
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_subject_key_identifier, "hash");
    if (rc == 0)
        rc = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
    return rc;
}

int al_pki_create_ca(const char *dir, unsigned flags)
{
    char kp[PATH_MAX], cp[PATH_MAX];
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    int rc;

    if (!dir)
        return AL_ERR_INVAL;
    rc = pathf(kp, "%s/ca.key", dir);
    if (rc == 0)
        rc = pathf(cp, "%s/ca.crt", dir);
    if (rc < 0)
        return rc;
    if (!(flags & AL_PKI_OVERWRITE) && (path_exists(kp) || path_exists(cp)))
        return AL_ERR_EXISTS;
    pk = EVP_EC_gen("P-256");
    if (!pk)
        return AL_ERR_CRYPTO;
    rc = new_cert(pk, NULL, "Airlock Dev CA", NULL, AL_PKI_CA_DAYS, &x);
    if (rc == 0)
        rc = ca_extensions(x);
    if (rc == 0 && X509_sign(x, pk, EVP_sha256()) <= 0)
        rc = AL_ERR_CRYPTO;
    if (rc == 0)
        rc = al_pki_write_private_key(kp, pk, flags);
    if (rc == 0)
        rc = al_pki_write_cert(cp, x, flags);
    X509_free(x);
    EVP_PKEY_free(pk);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

/* Loads dir/ca.crt and dir/ca.key and checks they belong together. */
static int load_ca(const char *dir, X509 **ca, EVP_PKEY **cakey)
{
    char p[PATH_MAX];
    int rc;

    rc = pathf(p, "%s/ca.crt", dir);
    if (rc == 0)
        rc = al_pki_load_cert(p, ca);
    if (rc == 0)
        rc = pathf(p, "%s/ca.key", dir);
    if (rc == 0)
        rc = al_pki_load_private_key(p, cakey);
    if (rc == 0 && X509_check_private_key(*ca, *cakey) != 1)
        rc = AL_ERR_CRYPTO;
    return rc;
}

int al_pki_issue(const char *dir, const char *role, const char *name, unsigned flags)
{
    return al_pki_issue_sans(dir, role, name, flags, NULL);
}

int al_pki_issue_sans(const char *dir, const char *role, const char *name, unsigned flags,
                      const char *const *sans)
{
    char kp[PATH_MAX], cp[PATH_MAX];
    EVP_PKEY *cakey = NULL, *pk = NULL;
    X509 *ca = NULL, *x = NULL;
    size_t nsans = 0;
    int rc;

    if (!dir || !al_pki_role_valid(role) || !al_pki_name_valid(name))
        return AL_ERR_INVAL;
    for (; sans && sans[nsans]; nsans++)
        if (nsans >= AL_PKI_SANS_MAX || !san_ok(sans[nsans]) || !(flags & AL_PKI_SERVER))
            return AL_ERR_INVAL;
    rc = pathf(kp, "%s/%s-%s.key", dir, role, name);
    if (rc == 0)
        rc = pathf(cp, "%s/%s-%s.crt", dir, role, name);
    if (rc < 0)
        return rc;
    if (!(flags & AL_PKI_OVERWRITE) && (path_exists(kp) || path_exists(cp)))
        return AL_ERR_EXISTS;
    rc = load_ca(dir, &ca, &cakey);
    if (rc < 0)
        goto out;
    pk = EVP_EC_gen("P-256");
    rc = pk ? new_cert(pk, role, name, ca, AL_PKI_LEAF_DAYS, &x) : AL_ERR_CRYPTO;
    if (rc == 0)
        rc = leaf_extensions(x, ca, role, name, flags, sans);
    if (rc == 0 && X509_sign(x, cakey, EVP_sha256()) <= 0)
        rc = AL_ERR_CRYPTO;
    if (rc == 0)
        rc = al_pki_write_private_key(kp, pk, flags);
    if (rc == 0)
        rc = al_pki_write_cert(cp, x, flags);
out:
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(pk);
    EVP_PKEY_free(cakey);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

/* Verifies leaf against ca alone, for TLS client use, at the current time. */
static int verify_chain(X509 *ca, X509 *leaf, char *why, size_t whylen)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *c = X509_STORE_CTX_new();
    int rc = AL_ERR_NOMEM;

    if (!st || !c || !X509_STORE_add_cert(st, ca) || !X509_STORE_CTX_init(c, st, leaf, NULL))
        goto out;
    X509_STORE_CTX_set_purpose(c, X509_PURPOSE_SSL_CLIENT);
    rc = 0;
    if (X509_verify_cert(c) != 1) {
        set_why(why, whylen, X509_verify_cert_error_string(X509_STORE_CTX_get_error(c)));
        rc = AL_ERR_AUTH;
    }
out:
    X509_STORE_CTX_free(c);
    X509_STORE_free(st);
    return rc;
}

static int check_leaf(X509 *ca, X509 *leaf, EVP_PKEY *key, const char *want, char *why,
                      size_t whylen)
{
    char id[AL_PKI_ID_MAX];
    int rc;

    rc = verify_chain(ca, leaf, why, whylen);
    if (rc < 0)
        return rc;
    rc = al_pki_spiffe_id(leaf, id, sizeof id);
    if (rc < 0 || strcmp(id, want) != 0) {
        set_why(why, whylen, "SPIFFE id missing or not the expected one");
        return AL_ERR_AUTH;
    }
    if (X509_check_private_key(leaf, key) != 1) {
        set_why(why, whylen, "key file does not match the certificate");
        return AL_ERR_CRYPTO;
    }
    return 0;
}

int al_pki_check(const char *dir, const char *role, const char *name, char *why, size_t whylen)
{
    char p[PATH_MAX], want[AL_PKI_ID_MAX];
    X509 *ca = NULL, *leaf = NULL;
    EVP_PKEY *key = NULL;
    int rc;

    set_why(why, whylen, "cannot read certificate or key files");
    if (!dir || !al_pki_role_valid(role) || !al_pki_name_valid(name))
        return AL_ERR_INVAL;
    snprintf(want, sizeof want, "%s%s/%s", spiffe_prefix, role, name);
    rc = pathf(p, "%s/ca.crt", dir);
    if (rc == 0)
        rc = al_pki_load_cert(p, &ca);
    if (rc == 0)
        rc = pathf(p, "%s/%s-%s.crt", dir, role, name);
    if (rc == 0)
        rc = al_pki_load_cert(p, &leaf);
    if (rc == 0)
        rc = pathf(p, "%s/%s-%s.key", dir, role, name);
    if (rc == 0)
        rc = al_pki_load_private_key(p, &key);
    if (rc == 0)
        rc = check_leaf(ca, leaf, key, want, why, whylen);
    if (rc == 0)
        set_why(why, whylen, "ok");
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(key);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}
