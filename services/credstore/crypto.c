/*
 * crypto: master key, derived keys, envelope encryption and MACs of the
 * credential store. See crypto.h for the formats and the lifecycles.
 *
 * OpenSSL algorithm objects (AES-256-GCM, SHA-256, HMAC) are fetched once per
 * process (pthread_once) and kept for its lifetime: fetching is far more
 * expensive than a single seal or MAC.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "al_err.h"
#include "al_log.h"
#include "al_pki.h"
#include "crypto.h"

#define N_MAC_KEYS 3

struct cs_master {
    uint8_t key[CS_KEY_LEN];
    uint8_t kek[CS_KEY_LEN];
    uint8_t mac[N_MAC_KEYS][CS_KEY_LEN]; /* indexed by enum cs_mac_key */
    char id[CS_KEY_ID_LEN + 1];
};

static const char *const MAC_INFO[N_MAC_KEYS] = {
    "airlock/v1/policy-mac",
    "airlock/v1/audit-mac",
    "airlock/v1/check",
};

/* ---- OpenSSL objects, fetched once ---- */

static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *alg_gcm;
static EVP_MD *alg_sha256;
static EVP_MAC *alg_hmac;

static void algs_fetch(void)
{
    alg_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    alg_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    alg_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static int algs(void)
{
    pthread_once(&algs_once, algs_fetch);
    return alg_gcm && alg_sha256 && alg_hmac ? 0 : AL_ERR_CRYPTO;
}

void cs_cleanse(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

int cs_ct_equal(const void *a, const void *b, size_t n)
{
    if (!a || !b)
        return 0;
    return CRYPTO_memcmp(a, b, n) == 0;
}

/* ---- HMAC, HKDF, SHA-256 ---- */

static int hmac(const uint8_t *key, size_t klen, const void *data, size_t len,
                uint8_t out[CS_MAC_LEN])
{
    OSSL_PARAM params[2];
    EVP_MAC_CTX *ctx = NULL;
    size_t outl = 0;
    int rc = AL_ERR_CRYPTO;

    if (algs() < 0)
        return AL_ERR_CRYPTO;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    ctx = EVP_MAC_CTX_new(alg_hmac);
    if (!ctx)
        goto out;
    if (EVP_MAC_init(ctx, key, klen, params) != 1 || EVP_MAC_update(ctx, data, len) != 1 ||
        EVP_MAC_final(ctx, out, &outl, CS_MAC_LEN) != 1 || outl != CS_MAC_LEN)
        goto out;
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

static int hkdf(const uint8_t key[CS_KEY_LEN], const char *info, uint8_t out[CS_KEY_LEN])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[4];
    int rc = AL_ERR_CRYPTO;

    if (!ctx)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, CS_KEY_LEN);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, strlen(info));
    params[3] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, CS_KEY_LEN, params) == 1)
        rc = 0;
out:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int cs_sha256(const void *a, size_t alen, const void *b, size_t blen, uint8_t out[CS_HASH_LEN])
{
    EVP_MD_CTX *ctx;
    unsigned int outl = 0;
    int rc = AL_ERR_CRYPTO;

    if (algs() < 0 || !out || (alen && !a) || (blen && !b))
        return AL_ERR_CRYPTO;
    ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestInit_ex2(ctx, alg_sha256, NULL) == 1 &&
        EVP_DigestUpdate(ctx, a, alen) == 1 && (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
        EVP_DigestFinal_ex(ctx, out, &outl) == 1 && outl == CS_HASH_LEN)
        rc = 0;
    EVP_MD_CTX_free(ctx);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

int cs_mac(const struct cs_master *m, enum cs_mac_key which, const void *data, size_t len,
           uint8_t out[CS_MAC_LEN])
{
    if (!m || !out || (len && !data) || (unsigned)which >= N_MAC_KEYS)
        return AL_ERR_INVAL;
    return hmac(m->mac[which], CS_KEY_LEN, data, len, out);
}

int cs_mac_verify(const struct cs_master *m, enum cs_mac_key which, const void *data, size_t len,
                  const uint8_t mac[CS_MAC_LEN])
{
    uint8_t want[CS_MAC_LEN];
    int rc;

    if (!mac)
        return AL_ERR_INVAL;
    rc = cs_mac(m, which, data, len, want);
    if (rc == 0 && !cs_ct_equal(want, mac, CS_MAC_LEN))
        rc = AL_ERR_CRYPTO;
    return rc;
}

/* ---- master key ---- */

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cs_master_from_bytes(const uint8_t key[CS_KEY_LEN], struct cs_master **out)
{
    static const char id_label[] = "airlock/v1/key-id";
    struct cs_master *m;
    uint8_t idmac[CS_MAC_LEN];
    int rc;

    if (!key || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    m = al_secure_alloc(sizeof(*m));
    if (!m)
        return AL_ERR_NOMEM;
    memcpy(m->key, key, CS_KEY_LEN);
    rc = hkdf(m->key, "airlock/v1/kek", m->kek);
    for (int i = 0; rc == 0 && i < N_MAC_KEYS; i++)
        rc = hkdf(m->key, MAC_INFO[i], m->mac[i]);
    if (rc == 0)
        rc = hmac(m->key, CS_KEY_LEN, id_label, sizeof(id_label) - 1, idmac);
    if (rc < 0) {
        al_secure_free(m);
        return rc;
    }
    hex_encode(idmac, CS_KEY_ID_LEN / 2, m->id);
    *out = m;
    return 0;
}

void cs_master_free(struct cs_master *m)
{
    al_secure_free(m);
}

const char *cs_master_key_id(const struct cs_master *m)
{
    return m ? m->id : "";
}

int cs_master_generate(const char *path, char *key_id)
{
    /* raw key, then its hex text; both in locked memory */
    uint8_t *raw = al_secure_alloc(CS_KEY_LEN + 2 * CS_KEY_LEN + 2);
    struct cs_master *m = NULL;
    char *hex;
    int rc;

    if (!path)
        rc = AL_ERR_INVAL;
    else if (!raw)
        rc = AL_ERR_NOMEM;
    else if (RAND_priv_bytes(raw, CS_KEY_LEN) != 1)
        rc = AL_ERR_CRYPTO;
    else
        rc = 0;
    if (rc < 0)
        goto out;
    hex = (char *)raw + CS_KEY_LEN;
    hex_encode(raw, CS_KEY_LEN, hex);
    hex[2 * CS_KEY_LEN] = '\n';
    rc = cs_master_from_bytes(raw, &m);
    if (rc == 0)
        rc = al_pki_write_file(path, hex, 2 * CS_KEY_LEN + 1, 0600, 0);
    if (rc == 0 && key_id)
        memcpy(key_id, m->id, CS_KEY_ID_LEN + 1);
out:
    cs_master_free(m);
    al_secure_free(raw);
    ERR_clear_error();
    return rc;
}

/* Reads at most cap bytes of fd into buf; *n gets the count. */
static int read_upto(int fd, char *buf, size_t cap, size_t *n)
{
    *n = 0;
    while (*n < cap) {
        ssize_t r = read(fd, buf + *n, cap - *n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        *n += (size_t)r;
    }
    return 0;
}

static int master_refuse(const char *path, int rc, const char *why)
{
    char q[256];

    AL_LOG_ERROR("credstore.master_key", "path=%s problem=\"%s\"",
                 al_log_quote(q, sizeof(q), path, strlen(path)), why);
    return rc;
}

/* Parses 64 hex digits (+ optional "\n") from text[0..n) into raw. */
static int parse_master(const char *text, size_t n, uint8_t raw[CS_KEY_LEN])
{
    if (n == 2 * CS_KEY_LEN + 1 && text[2 * CS_KEY_LEN] == '\n')
        n--;
    if (n != 2 * CS_KEY_LEN)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < CS_KEY_LEN; i++) {
        int hi = hex_digit((unsigned char)text[2 * i]);
        int lo = hex_digit((unsigned char)text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return AL_ERR_INVAL;
        raw[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int cs_master_load(const char *path, struct cs_master **out)
{
    enum { CAP = 2 * CS_KEY_LEN + 2 }; /* one byte more than a valid file */
    uint8_t *mem = NULL;
    struct stat st;
    size_t n = 0;
    int fd = -1, rc;
    char why[96];

    if (!path || !out)
        return AL_ERR_INVAL;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = errno == ENOENT ? AL_ERR_NOTFOUND : -errno;
        return master_refuse(path, rc, rc == AL_ERR_NOTFOUND ? "no such file" : "cannot open");
    }
    if (fstat(fd, &st) < 0) {
        rc = master_refuse(path, -errno, "cannot stat");
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = master_refuse(path, AL_ERR_CONFIG, "not a regular file");
        goto out;
    }
    if (st.st_mode & 077) {
        snprintf(why, sizeof(why), "mode %04o lets group or others read it; chmod 600",
                 (unsigned)(st.st_mode & 07777));
        rc = master_refuse(path, AL_ERR_CONFIG, why);
        goto out;
    }
    mem = al_secure_alloc(CAP + CS_KEY_LEN);
    if (!mem) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    rc = read_upto(fd, (char *)mem, CAP, &n);
    if (rc < 0) {
        master_refuse(path, rc, "read failed");
        goto out;
    }
    rc = parse_master((const char *)mem, n, mem + CAP);
    if (rc < 0) {
        master_refuse(path, rc, "not 64 hex digits and a newline");
        goto out;
    }
    rc = cs_master_from_bytes(mem + CAP, out);
out:
    al_secure_free(mem);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- envelope encryption ---- */

static void aad_value(struct cs_buf *b, const char *name, int32_t version)
{
    cs_buf_str(b, "airlock/v1/value");
    cs_buf_str(b, name);
    cs_buf_i64(b, version);
}

static void aad_dek(struct cs_buf *b, const char *name, int32_t version, const char *key_id)
{
    cs_buf_str(b, "airlock/v1/dek");
    cs_buf_str(b, name);
    cs_buf_i64(b, version);
    cs_buf_str(b, key_id);
}

/*
 * AES-256-GCM of in[0..len) into out (same length) with aad. Encrypting
 * writes the tag to tag; decrypting checks it.
 */
static int gcm(int enc, const uint8_t key[CS_KEY_LEN], const uint8_t nonce[CS_NONCE_LEN],
               const struct cs_buf *aad, const uint8_t *in, size_t len, uint8_t *out,
               uint8_t tag[CS_TAG_LEN])
{
    EVP_CIPHER_CTX *ctx = NULL;
    int outl = 0, rc = AL_ERR_CRYPTO;

    if (algs() < 0 || len > INT32_MAX || aad->err)
        return AL_ERR_CRYPTO;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_CipherInit_ex2(ctx, alg_gcm, key, nonce, enc, NULL) != 1)
        goto out;
    if (EVP_CipherUpdate(ctx, NULL, &outl, aad->p, (int)aad->len) != 1)
        goto out;
    if (len && EVP_CipherUpdate(ctx, out, &outl, in, (int)len) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, CS_TAG_LEN, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + len, &outl) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, CS_TAG_LEN, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (rc < 0)
        ERR_clear_error();
    return rc;
}

static int args_ok(const struct cs_master *m, const char *name, int32_t version)
{
    return m && name && name[0] && version >= 1;
}

/* Wraps dek under m's KEK into s (key_id, dek_nonce, wrapped_dek). */
static int wrap_dek(const struct cs_master *m, const char *name, int32_t version,
                    const uint8_t dek[CS_KEY_LEN], struct cs_sealed *s)
{
    struct cs_buf aad;
    int rc;

    if (RAND_bytes(s->dek_nonce, CS_NONCE_LEN) != 1)
        return AL_ERR_CRYPTO;
    memcpy(s->key_id, m->id, sizeof(s->key_id));
    cs_buf_init(&aad);
    aad_dek(&aad, name, version, m->id);
    rc = gcm(1, m->kek, s->dek_nonce, &aad, dek, CS_KEY_LEN, s->wrapped_dek,
             s->wrapped_dek + CS_KEY_LEN);
    cs_buf_cleanup(&aad);
    return rc;
}

/* Unwraps s's DEK under m's KEK into dek (cleansed on failure). */
static int unwrap_dek(const struct cs_master *m, const char *name, int32_t version,
                      const struct cs_sealed *s, uint8_t dek[CS_KEY_LEN])
{
    uint8_t tag[CS_TAG_LEN];
    struct cs_buf aad;
    int rc;

    if (strcmp(s->key_id, m->id) != 0)
        return AL_ERR_CRYPTO;
    memcpy(tag, s->wrapped_dek + CS_KEY_LEN, CS_TAG_LEN);
    cs_buf_init(&aad);
    aad_dek(&aad, name, version, s->key_id);
    rc = gcm(0, m->kek, s->dek_nonce, &aad, s->wrapped_dek, CS_KEY_LEN, dek, tag);
    cs_buf_cleanup(&aad);
    if (rc < 0)
        OPENSSL_cleanse(dek, CS_KEY_LEN);
    return rc;
}

int cs_seal(const struct cs_master *m, const char *name, int32_t version, const uint8_t *value,
            size_t len, struct cs_sealed *out)
{
    uint8_t dek[CS_KEY_LEN];
    struct cs_buf aad;
    int rc;

    if (!out)
        return AL_ERR_INVAL;
    memset(out, 0, sizeof(*out));
    if (!args_ok(m, name, version) || !value || len == 0)
        return AL_ERR_INVAL;
    if (len > CS_VALUE_MAX)
        return AL_ERR_TOOBIG;
    out->ciphertext = malloc(len + CS_TAG_LEN);
    if (!out->ciphertext)
        return AL_ERR_NOMEM;
    out->ciphertext_len = len + CS_TAG_LEN;
    cs_buf_init(&aad);
    aad_value(&aad, name, version);
    rc = RAND_priv_bytes(dek, CS_KEY_LEN) == 1 && RAND_bytes(out->value_nonce, CS_NONCE_LEN) == 1
             ? 0
             : AL_ERR_CRYPTO;
    if (rc == 0)
        rc =
            gcm(1, dek, out->value_nonce, &aad, value, len, out->ciphertext, out->ciphertext + len);
    if (rc == 0)
        rc = wrap_dek(m, name, version, dek, out);
    OPENSSL_cleanse(dek, sizeof(dek));
    cs_buf_cleanup(&aad);
    if (rc < 0)
        cs_sealed_cleanup(out);
    return rc;
}

int cs_open(const struct cs_master *m, const char *name, int32_t version,
            const struct cs_sealed *in, uint8_t *out, size_t cap, size_t *out_len)
{
    uint8_t dek[CS_KEY_LEN], tag[CS_TAG_LEN];
    struct cs_buf aad;
    size_t len;
    int rc;

    if (!args_ok(m, name, version) || !in || !out || !out_len || !in->ciphertext)
        return AL_ERR_INVAL;
    *out_len = 0;
    if (in->ciphertext_len <= CS_TAG_LEN)
        return AL_ERR_CRYPTO;
    len = in->ciphertext_len - CS_TAG_LEN;
    if (len > cap)
        return AL_ERR_TOOBIG;
    rc = unwrap_dek(m, name, version, in, dek);
    if (rc < 0)
        return rc;
    memcpy(tag, in->ciphertext + len, CS_TAG_LEN);
    cs_buf_init(&aad);
    aad_value(&aad, name, version);
    rc = gcm(0, dek, in->value_nonce, &aad, in->ciphertext, len, out, tag);
    OPENSSL_cleanse(dek, sizeof(dek));
    cs_buf_cleanup(&aad);
    if (rc < 0) {
        OPENSSL_cleanse(out, len);
        return rc;
    }
    *out_len = len;
    return 0;
}

int cs_rewrap(const struct cs_master *from, const struct cs_master *to, const char *name,
              int32_t version, struct cs_sealed *io)
{
    uint8_t dek[CS_KEY_LEN];
    struct cs_sealed tmp;
    int rc;

    if (!args_ok(from, name, version) || !to || !io)
        return AL_ERR_INVAL;
    rc = unwrap_dek(from, name, version, io, dek);
    if (rc < 0)
        return rc;
    tmp = *io;
    rc = wrap_dek(to, name, version, dek, &tmp);
    OPENSSL_cleanse(dek, sizeof(dek));
    if (rc == 0)
        *io = tmp;
    OPENSSL_cleanse(&tmp, sizeof(tmp));
    return rc;
}

void cs_sealed_cleanup(struct cs_sealed *io)
{
    if (!io)
        return;
    if (io->ciphertext)
        OPENSSL_cleanse(io->ciphertext, io->ciphertext_len);
    free(io->ciphertext);
    memset(io, 0, sizeof(*io));
}

/* ---- key rings ---- */

const struct cs_master *cs_keyring_find(const struct cs_keyring *k, const char *key_id)
{
    if (!k || !key_id)
        return NULL;
    if (k->primary && strcmp(k->primary->id, key_id) == 0)
        return k->primary;
    for (size_t i = 0; i < k->n_previous; i++) {
        if (k->previous[i] && strcmp(k->previous[i]->id, key_id) == 0)
            return k->previous[i];
    }
    return NULL;
}

/* ---- canonical encodings ---- */

void cs_buf_init(struct cs_buf *b)
{
    memset(b, 0, sizeof(*b));
}

void cs_buf_cleanup(struct cs_buf *b)
{
    if (!b)
        return;
    if (b->p)
        OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void cs_buf_raw(struct cs_buf *b, const void *d, size_t n)
{
    if (b->err || n == 0)
        return;
    if (n > CS_BUF_MAX - b->len) {
        b->err = AL_ERR_TOOBIG;
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *p;
        while (cap < b->len + n)
            cap *= 2;
        /* no realloc: the old block must be cleansed, not handed back dirty */
        p = malloc(cap);
        if (!p) {
            b->err = AL_ERR_NOMEM;
            return;
        }
        if (b->p) {
            memcpy(p, b->p, b->len);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

void cs_buf_i64(struct cs_buf *b, int64_t v)
{
    uint8_t be[8];
    uint64_t u = (uint64_t)v;

    for (int i = 7; i >= 0; i--) {
        be[i] = (uint8_t)u;
        u >>= 8;
    }
    cs_buf_raw(b, be, sizeof(be));
}

void cs_buf_blob(struct cs_buf *b, const void *d, size_t n)
{
    uint8_t be[4];

    if (n > UINT32_MAX) {
        if (!b->err)
            b->err = AL_ERR_TOOBIG;
        return;
    }
    be[0] = (uint8_t)(n >> 24);
    be[1] = (uint8_t)(n >> 16);
    be[2] = (uint8_t)(n >> 8);
    be[3] = (uint8_t)n;
    cs_buf_raw(b, be, sizeof(be));
    cs_buf_raw(b, d, n);
}

void cs_buf_str(struct cs_buf *b, const char *s)
{
    cs_buf_blob(b, s ? s : "", s ? strlen(s) : 0);
}
