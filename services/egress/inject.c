/*
 * inject: credentials and placeholder slots (see inject.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "al_base64.h"
#include "al_err.h"
#include "al_wipe.h"
#include "inject.h"
#include "scrub.h"

int eg_placeholder_ok(const char *p, size_t n)
{
    static const size_t pl = sizeof(EG_PH_PREFIX) - 1;

    if (n != EG_PH_LEN || memcmp(p, EG_PH_PREFIX, pl) != 0)
        return 0;
    for (size_t i = pl; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
            return 0;
    return 1;
}

static char *dup_str(const char *s)
{
    return strdup(s ? s : "");
}

static void template_of(const struct eg_cred *c, struct gw_template *t)
{
    t->type = c->type;
    t->header = c->tmpl_header;
    t->format = c->tmpl_format;
    t->allow_plain_http = c->allow_plain_http;
}

/* Splits the formatted header for the placeholder into the text before and
 * after the slot's content (the placeholder, or its base64 for BASIC). */
static int find_slot(struct eg_cred *c, char *why, size_t n)
{
    struct gw_template t;
    char hdr[GW_HEADER_MAX + 1], b64[64];
    uint8_t *f = NULL;
    size_t fl = 0, sl;
    const char *slot = c->placeholder, *at;
    int rc;

    template_of(c, &t);
    rc = gw_inject_format(&t, (const uint8_t *)c->placeholder, EG_PH_LEN, 0, hdr, &f, &fl, why, n);
    if (rc < 0)
        return rc;
    if (c->type == GW_CRED_BASIC) {
        al_base64_encode((const uint8_t *)c->placeholder, EG_PH_LEN, b64, sizeof(b64), 0, NULL);
        slot = b64;
    }
    sl = strlen(slot);
    at = memmem(f, fl, slot, sl);
    if (!at) {
        al_secure_free(f);
        snprintf(why, n, "the credential's template has no usable slot");
        return AL_ERR_INVAL;
    }
    c->pre = strndup((const char *)f, (size_t)(at - (const char *)f));
    c->post = strndup(at + sl, fl - (size_t)(at - (const char *)f) - sl);
    al_secure_free(f);
    return c->pre && c->post ? 0 : AL_ERR_NOMEM;
}

/* The template must accept the value itself (characters, length). */
static int check_value(struct eg_cred *c, char *why, size_t n)
{
    struct gw_template t;
    char hdr[GW_HEADER_MAX + 1];
    uint8_t *f = NULL;
    size_t fl = 0;
    int rc;

    if (c->value_len < RL_SCRUB_MIN_VALUE || c->value_len > RL_SCRUB_MAX_VALUE) {
        snprintf(why, n, "the value is too %s to be scrubbed from responses",
                 c->value_len < RL_SCRUB_MIN_VALUE ? "short" : "long");
        return AL_ERR_INVAL;
    }
    template_of(c, &t);
    rc = gw_inject_format(&t, c->value, c->value_len, 0, hdr, &f, &fl, why, n);
    al_secure_free(f);
    if (rc == 0)
        memcpy(c->header, hdr, sizeof(hdr));
    return rc;
}

int eg_cred_init(struct eg_cred *c, const struct eg_cred_spec *s, char *why, size_t n)
{
    int rc = AL_ERR_INVAL;

    memset(c, 0, sizeof(*c));
    if (!s->placeholder || !eg_placeholder_ok(s->placeholder, strlen(s->placeholder))) {
        snprintf(why, n, "the placeholder is not AIRLOCK_PH_ and 32 lowercase hex digits");
        return AL_ERR_INVAL;
    }
    if (s->nbinds == 0 || s->nbinds > EG_MAX_BINDS) {
        snprintf(why, n, "a credential needs 1 to %d destinations", EG_MAX_BINDS);
        return AL_ERR_INVAL;
    }
    memcpy(c->placeholder, s->placeholder, EG_PH_LEN + 1);
    c->name = dup_str(s->name);
    c->tmpl_header = dup_str(s->header);
    c->tmpl_format = dup_str(s->format);
    c->grant_id = dup_str(s->grant_id);
    c->binds = calloc(s->nbinds, sizeof(*c->binds));
    c->value = al_secure_alloc(s->value_len ? s->value_len : 1);
    if (!c->name || !c->tmpl_header || !c->tmpl_format || !c->grant_id || !c->binds || !c->value) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    if (s->value_len)
        memcpy(c->value, s->value, s->value_len);
    c->value_len = s->value_len;
    c->version = s->version;
    c->type = s->type;
    c->allow_plain_http = s->allow_plain_http;
    c->expires_ms = s->expires_ms;
    c->credstore_expires_ms = s->credstore_expires_ms;
    for (size_t i = 0; i < s->nbinds; i++) {
        rc = eg_bind_init(&c->binds[i], s->binds[i], why, n);
        if (rc < 0)
            goto out;
        c->nbinds++;
    }
    rc = check_value(c, why, n);
    if (rc == 0)
        rc = find_slot(c, why, n);
out:
    if (rc < 0)
        eg_cred_cleanup(c);
    return rc;
}

void eg_cred_expire(struct eg_cred *c)
{
    al_secure_free(c->value);
    c->value = NULL;
    c->value_len = 0;
}

void eg_cred_cleanup(struct eg_cred *c)
{
    if (!c)
        return;
    eg_cred_expire(c);
    for (size_t i = 0; i < c->nbinds; i++)
        eg_dest_cleanup(&c->binds[i]);
    free(c->binds);
    free(c->name);
    free(c->tmpl_header);
    free(c->tmpl_format);
    free(c->pre);
    free(c->post);
    free(c->grant_id);
    memset(c, 0, sizeof(*c));
}

/* ------------------------------------------------------------ scanning */

static int deny(struct eg_scan *s, long cred, int exfil, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int deny(struct eg_scan *s, long cred, int exfil, const char *fmt, ...)
{
    va_list ap;

    s->cred = cred;
    s->exfil = exfil;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
    va_end(ap);
    return AL_ERR_AUTH;
}

static int bound_to(const struct eg_cred *c, const struct eg_authority *a)
{
    for (size_t i = 0; i < c->nbinds; i++)
        if (c->binds[i].port == a->port && eg_host_match(&c->binds[i], &a->host))
            return 1;
    return 0;
}

/* Is v[0..n) pre ‖ mid ‖ post, pre and post compared case-insensitively?
 * Sets *mid / *midlen. */
static int framed(const struct eg_cred *c, const char *v, size_t n, const char **mid,
                  size_t *midlen)
{
    size_t pl = strlen(c->pre), ql = strlen(c->post);

    if (n < pl + ql || strncasecmp(v, c->pre, pl) != 0 || strncasecmp(v + n - ql, c->post, ql) != 0)
        return 0;
    *mid = v + pl;
    *midlen = n - pl - ql;
    return 1;
}

static int format_value(const struct eg_cred *c, const uint8_t *v, size_t n, int plain_http,
                        uint8_t **out, size_t *outlen)
{
    struct gw_template t;
    char hdr[GW_HEADER_MAX + 1], why[128];

    template_of(c, &t);
    return gw_inject_format(&t, v, n, plain_http, hdr, out, outlen, why, sizeof(why));
}

/* BASIC: the decoded user:password with the placeholder replaced, formatted.
 * Returns 0, AL_ERR_AUTH (not a usable slot) or AL_ERR_NOMEM. */
static int basic_subst(const struct eg_cred *c, const struct rl_scrub *detect, const char *b64,
                       size_t bn, int plain_http, uint8_t **out, size_t *outlen)
{
    size_t cap = al_base64_decoded_maxlen(bn) + 1, dl = 0, nl;
    uint8_t *d = al_secure_alloc(cap), *nv = NULL;
    const uint8_t *at;
    int rc = AL_ERR_AUTH;

    if (!d)
        return AL_ERR_NOMEM;
    if (al_base64_decode(b64, bn, d, cap, 0, &dl) < 0)
        goto out;
    at = memmem(d, dl, c->placeholder, EG_PH_LEN);
    if (!at || memmem(at + 1, dl - (size_t)(at - d) - 1, c->placeholder, EG_PH_LEN))
        goto out; /* not there, or twice */
    size_t before = (size_t)(at - d), after = dl - before - EG_PH_LEN;
    if (rl_scrub_find(detect, d, before) >= 0 || rl_scrub_find(detect, at + EG_PH_LEN, after) >= 0)
        goto out; /* another placeholder rides along */
    if (memchr(c->value, ':', c->value_len)) {
        /* the value is user:password: the placeholder stands for all of it */
        if (before != 0 || after > 1 || (after == 1 && at[EG_PH_LEN] != ':'))
            goto out;
        before = after = 0;
    }
    nl = before + c->value_len + after;
    nv = al_secure_alloc(nl);
    if (!nv) {
        rc = AL_ERR_NOMEM;
        goto out;
    }
    memcpy(nv, d, before);
    memcpy(nv + before, c->value, c->value_len);
    memcpy(nv + before + c->value_len, at + EG_PH_LEN, after);
    rc = format_value(c, nv, nl, plain_http, out, outlen) < 0 ? AL_ERR_AUTH : 0;
out:
    al_secure_free(d);
    al_secure_free(nv);
    return rc;
}

/* The slot check and substitution for header value v of credential c. */
static int substitute(const struct eg_cred *c, const struct rl_scrub *detect, const char *v,
                      size_t n, int plain_http, uint8_t **out, size_t *outlen)
{
    const char *mid;
    size_t ml;

    if (!framed(c, v, n, &mid, &ml))
        return AL_ERR_AUTH;
    if (c->type == GW_CRED_BASIC)
        return basic_subst(c, detect, mid, ml, plain_http, out, outlen);
    if (ml != EG_PH_LEN || memcmp(mid, c->placeholder, EG_PH_LEN) != 0)
        return AL_ERR_AUTH;
    return format_value(c, c->value, c->value_len, plain_http, out, outlen) < 0 ? AL_ERR_AUTH : 0;
}

static int same_name(const struct rl_h1_header *h, const char *lower)
{
    return h->name_len == strlen(lower) && memcmp(h->name, lower, h->name_len) == 0;
}

/* One header holding a placeholder of credential k. */
static int scan_slot(const struct eg_cred *creds, size_t k, const struct rl_scrub *detect,
                     const struct eg_authority *a, int plain_http, int64_t now_ms,
                     const struct rl_h1_header *h, size_t idx, struct eg_scan *s)
{
    const struct eg_cred *c = &creds[k];
    char name[GW_HEADER_MAX + 1], dest[EG_HOSTPORT_MAX];
    struct eg_subst *x;
    int rc;

    /* for the reason: the name (a token, from h1) cut to what a template may name */
    snprintf(name, sizeof(name), "%.*s",
             (int)(h->name_len > GW_HEADER_MAX ? GW_HEADER_MAX : h->name_len), h->name);
    if (!same_name(h, c->header))
        return deny(s, (long)k, 1,
                    "placeholder of credential %s in header %s, outside its "
                    "template slot",
                    c->name, name);
    for (size_t i = 0; i < s->nsubst; i++)
        if (s->subst[i].cred == k || same_name(h, creds[s->subst[i].cred].header))
            return deny(s, (long)k, 1, "header %s appears twice with a placeholder", name);
    if (!bound_to(c, a))
        return deny(s, (long)k, 1, "credential %s is not bound to %s", c->name,
                    eg_authority_format(a, dest, sizeof(dest)));
    if (plain_http && !c->allow_plain_http)
        return deny(s, (long)k, 1, "credential %s may not be sent over plain http", c->name);
    if (!c->value || now_ms >= c->expires_ms)
        return deny(s, (long)k, 0, "credential %s has expired", c->name);
    x = &s->subst[s->nsubst];
    rc = substitute(c, detect, h->value, h->value_len, plain_http, &x->value, &x->len);
    if (rc == AL_ERR_NOMEM)
        return rc;
    if (rc < 0)
        return deny(s, (long)k, 1,
                    "placeholder of credential %s in header %s, not in the form "
                    "its template expects",
                    c->name, name);
    x->header = idx;
    x->cred = k;
    s->nsubst++;
    return 0;
}

static int hexv(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* The first placeholder in the target, as sent or percent-decoded (a server
 * decodes it; "AIRLOCK%5FPH%5F..." is the same placeholder to it). */
static long target_find(const struct rl_scrub *detect, const char *t, size_t n)
{
    long k = rl_scrub_find(detect, (const uint8_t *)t, n);
    uint8_t *d;
    size_t m = 0;

    if (k >= 0 || !memchr(t, '%', n) || !(d = malloc(n)))
        return k;
    for (size_t i = 0; i < n; i++) {
        if (t[i] == '%' && i + 2 < n && hexv(t[i + 1]) >= 0 && hexv(t[i + 2]) >= 0) {
            d[m++] = (uint8_t)(hexv(t[i + 1]) * 16 + hexv(t[i + 2]));
            i += 2;
        } else {
            d[m++] = (uint8_t)t[i];
        }
    }
    k = rl_scrub_find(detect, d, m);
    free(d);
    return k;
}

static int scan_all(const struct eg_cred *creds, size_t ncreds, const struct rl_scrub *detect,
                    const struct eg_authority *a, int plain_http, int64_t now_ms,
                    const char *target, size_t target_len, const struct rl_h1_header *h, size_t nh,
                    struct eg_scan *out)
{
    long k;

    if ((k = target_find(detect, target, target_len)) >= 0)
        return deny(out, k, 1, "placeholder of credential %s in the request URL",
                    (size_t)k < ncreds ? creds[k].name : "?");
    for (size_t i = 0; i < nh; i++) {
        if ((k = rl_scrub_find(detect, (const uint8_t *)h[i].name, h[i].name_len)) >= 0)
            return deny(out, k, 1, "placeholder of credential %s in a header name",
                        (size_t)k < ncreds ? creds[k].name : "?");
        k = rl_scrub_find(detect, (const uint8_t *)h[i].value, h[i].value_len);
        if (k < 0)
            continue;
        if ((size_t)k >= ncreds)
            return deny(out, k, 1, "placeholder in header %.*s", (int)h[i].name_len, h[i].name);
        int rc = scan_slot(creds, (size_t)k, detect, a, plain_http, now_ms, &h[i], i, out);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int eg_scan_head(const struct eg_cred *creds, size_t ncreds, const struct rl_scrub *detect,
                 const struct eg_authority *a, int plain_http, int64_t now_ms, const char *target,
                 size_t target_len, const struct rl_h1_header *h, size_t nh, struct eg_scan *out)
{
    int rc;

    memset(out, 0, sizeof(*out));
    out->cred = -1;
    if (!detect || ncreds == 0)
        return 0;
    rc = scan_all(creds, ncreds, detect, a, plain_http, now_ms, target, target_len, h, nh, out);
    if (rc < 0)
        eg_scan_cleanup(out); /* a refused request carries no value anywhere */
    return rc;
}

void eg_scan_cleanup(struct eg_scan *s)
{
    for (size_t i = 0; i < s->nsubst; i++) {
        al_secure_free(s->subst[i].value);
        s->subst[i].value = NULL;
    }
    s->nsubst = 0;
}
