/*
 * al_pki: the development PKI and SPIFFE identities.
 *
 * A directory holds one CA (ca.crt, ca.key) and leaf identities
 * (<role>-<name>.crt, <role>-<name>.key). Every key is ECDSA P-256, every
 * certificate SHA-256 signed. A leaf's identity is its one URI SAN
 * spiffe://airlock/<role>/<name>. Private key files are mode 0600, certificates
 * 0644; files are never half-written (exclusive create, or temp file + rename
 * when overwriting).
 *
 * The same file helpers (al_pki_write_*, al_pki_load_*) are used for grant
 * signing keys (al_grant). Nothing here keeps state between calls.
 */
#ifndef AL_PKI_H
#define AL_PKI_H

#include <stddef.h>
#include <sys/types.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* Flags for al_pki_create_ca, al_pki_issue and the write helpers. */
#define AL_PKI_OVERWRITE 0x1u /* replace existing files instead of failing with AL_ERR_EXISTS */
#define AL_PKI_SERVER                                                                              \
    0x2u /* leaf serves TLS too: SAN DNS:localhost, IP:127.0.0.1, IP:::1                           \
            and extendedKeyUsage serverAuth (clientAuth is always set) */

#define AL_PKI_CA_DAYS   3650
#define AL_PKI_LEAF_DAYS 365
#define AL_PKI_ROLE_MAX  16  /* buffer size that holds any valid role plus NUL */
#define AL_PKI_NAME_MAX  65  /* buffer size that holds any valid name plus NUL */
#define AL_PKI_ID_MAX    128 /* buffer size that holds any valid SPIFFE id plus NUL */

/*
 * Creates dir/ca.key (0600) and dir/ca.crt: an ECDSA P-256 self-signed CA,
 * subject "O=Airlock, CN=Airlock Dev CA", valid AL_PKI_CA_DAYS days,
 * basicConstraints critical CA:TRUE, keyUsage critical keyCertSign, cRLSign.
 * dir must exist. flags: AL_PKI_OVERWRITE.
 * Returns 0, AL_ERR_EXISTS (either file exists and no AL_PKI_OVERWRITE),
 * AL_ERR_CRYPTO (OpenSSL failure), AL_ERR_TOOBIG (path too long) or -errno.
 */
int al_pki_create_ca(const char *dir, unsigned flags);

/*
 * Issues a leaf for spiffe://airlock/<role>/<name> signed by the CA in dir:
 * writes dir/<role>-<name>.key (0600) and dir/<role>-<name>.crt. ECDSA P-256,
 * random 128-bit serial, valid AL_PKI_LEAF_DAYS days (never past the CA),
 * keyUsage critical digitalSignature, extendedKeyUsage clientAuth (+ serverAuth
 * and the loopback SANs with AL_PKI_SERVER). flags: AL_PKI_OVERWRITE, AL_PKI_SERVER.
 * Returns 0, AL_ERR_INVAL (role or name not valid, see al_pki_parse_spiffe),
 * AL_ERR_EXISTS (leaf exists and no AL_PKI_OVERWRITE), AL_ERR_NOTFOUND (no CA
 * in dir), AL_ERR_CRYPTO (OpenSSL failure, CA key not matching CA cert),
 * AL_ERR_TOOBIG (path too long) or -errno.
 */
int al_pki_issue(const char *dir, const char *role, const char *name, unsigned flags);

#define AL_PKI_SANS_MAX 16 /* extra SANs al_pki_issue_sans() takes */

/*
 * As al_pki_issue(), with extra SANs for a server reached by other names
 * (e.g. Kubernetes Service names): sans is a NULL-terminated list (NULL for
 * none) of at most AL_PKI_SANS_MAX entries "DNS:<host name>" (letters,
 * digits, '-' and '.', labels of 1-63 characters, at most 253 in all) or
 * "IP:<IPv4 or IPv6 literal>", added after the loopback SANs; they need
 * AL_PKI_SERVER. Returns as al_pki_issue(), and AL_ERR_INVAL for a SAN not of
 * that form or given without AL_PKI_SERVER. Borrows sans.
 */
int al_pki_issue_sans(const char *dir, const char *role, const char *name, unsigned flags,
                      const char *const *sans);

/*
 * Checks that dir/<role>-<name>.crt chains to dir/ca.crt, is currently valid,
 * carries exactly spiffe://airlock/<role>/<name> and matches its .key file.
 * why (may be NULL) gets a short reason on failure.
 * Returns 0, AL_ERR_NOTFOUND (a file is missing), AL_ERR_AUTH (chain,
 * validity or identity wrong), AL_ERR_CRYPTO (key does not match or OpenSSL
 * failure), AL_ERR_INVAL or AL_ERR_TOOBIG.
 */
int al_pki_check(const char *dir, const char *role, const char *name, char *why, size_t whylen);

/*
 * Copies the SPIFFE id of cert (its URI SAN starting with "spiffe://") into buf
 * (size n), NUL-terminated. The form is not validated; use al_pki_parse_spiffe.
 * Returns 0, AL_ERR_NOTFOUND (no such SAN), AL_ERR_AUTH (more than one
 * spiffe:// URI SAN, or one holding NUL or control bytes: the identity is
 * ambiguous), AL_ERR_TOOBIG (buf too small) or AL_ERR_INVAL. Borrows cert.
 */
int al_pki_spiffe_id(const X509 *cert, char *buf, size_t n);

/*
 * Validates id as spiffe://airlock/<role>/<name> with role one of intake,
 * executor, relay, gateway, credstore, admin, client, test and name matching
 * [A-Za-z0-9._-]{1,64}; copies role and name out. role/name may be NULL (with
 * size 0) when not wanted; AL_PKI_ROLE_MAX and AL_PKI_NAME_MAX always suffice.
 * Returns 0, AL_ERR_INVAL (not of that form) or AL_ERR_TOOBIG (a buffer too small).
 */
int al_pki_parse_spiffe(const char *id, char *role, size_t rolelen, char *name, size_t namelen);

/* Returns 1 if role is one of the roles listed above, else 0. */
int al_pki_role_valid(const char *role);

/* Returns 1 if name matches [A-Za-z0-9._-]{1,64}, else 0. */
int al_pki_name_valid(const char *name);

/*
 * Writes data[0..len) to path with mode (umask not applied). Without
 * AL_PKI_OVERWRITE the file is created exclusively (O_EXCL, no symlink
 * following) and removed again if writing fails; with it, a temporary file in
 * the same directory is written, fsync'd and renamed over path.
 * Returns 0, AL_ERR_EXISTS or -errno. Borrows data.
 */
int al_pki_write_file(const char *path, const void *data, size_t len, mode_t mode, unsigned flags);

/* Writes pk's private key as unencrypted PKCS#8 PEM, mode 0600; as al_pki_write_file. The
 * PEM text only lives in OpenSSL secure (cleared-on-free) memory. Borrows pk. */
int al_pki_write_private_key(const char *path, EVP_PKEY *pk, unsigned flags);
/* Writes pk's public key as SubjectPublicKeyInfo PEM, mode 0644; as al_pki_write_file. */
int al_pki_write_public_key(const char *path, EVP_PKEY *pk, unsigned flags);
/* Writes cert as PEM, mode 0644; as al_pki_write_file. Borrows cert. */
int al_pki_write_cert(const char *path, X509 *cert, unsigned flags);

/*
 * Loads a PEM private key (any type) from path into *out (caller frees with
 * EVP_PKEY_free). Logs a warning when the file is readable by group or others.
 * Returns 0, AL_ERR_NOTFOUND (no file), AL_ERR_CRYPTO (not a PEM private key) or -errno.
 */
int al_pki_load_private_key(const char *path, EVP_PKEY **out);
/* Loads a PEM SubjectPublicKeyInfo from path into *out (EVP_PKEY_free). Errors as above. */
int al_pki_load_public_key(const char *path, EVP_PKEY **out);
/* Loads the first PEM certificate from path into *out (X509_free). Errors as above. */
int al_pki_load_cert(const char *path, X509 **out);

#endif
