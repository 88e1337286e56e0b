/*
 * al_metrics: families kept in a creation-ordered list, series in a hash table
 * keyed by (name, labels) and threaded on their family's list so rendering is
 * stable. Series and families live until al_metrics_free().
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "al_log.h"
#include "al_metrics.h"

#define TAB_INIT     64
#define NAME_MAX_LEN 200
#define HELP_MAX_LEN 1024
#define WARN_MAX     16 /* refusals logged per registry */

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM };

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

static const double default_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};

struct family {
    struct family *next;
    char *name, *help;
    enum kind kind;
    double *bounds; /* histograms */
    size_t nbounds;
    struct al_metric *first, *last;
};

struct al_metric {
    struct family *fam;
    struct al_metric *next;  /* in the family, creation order */
    struct al_metric *hnext; /* hash chain */
    uint64_t hash;
    char *labels; /* "" for none */
    double value; /* counter, gauge */
    double sum;   /* histogram */
    uint64_t count;
    uint64_t *buckets; /* nbounds + 1 (last is +Inf), not cumulative */
};

struct al_metrics {
    struct family *fams, *fams_tail;
    struct al_metric **tab;
    size_t tabsize, nseries;
    unsigned warnings;
};

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

/* ---- validation -------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min, cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    cp = c & (0x7f >> len);
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int name_ok(const char *s, int colon)
{
    size_t n = 0;

    for (; *s; s++, n++) {
        int alpha = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' ||
                    (colon && *s == ':');
        if (!alpha && !(n > 0 && *s >= '0' && *s <= '9'))
            return 0;
    }
    return n > 0 && n <= NAME_MAX_LEN;
}

/* One quoted label value at *p: escapes \\ \" \n only, valid UTF-8. */
static int label_value_ok(const char **p)
{
    const char *s = *p;

    if (*s++ != '"')
        return 0;
    while (*s != '"') {
        size_t l;
        if (*s == '\0')
            return 0;
        if (*s == '\\') {
            if (s[1] != '\\' && s[1] != '"' && s[1] != 'n')
                return 0;
            s += 2;
            continue;
        }
        l = utf8_len((const unsigned char *)s, 4); /* stops at the NUL */
        if (l == 0 || *s == '\n')
            return 0;
        s += l;
    }
    *p = s + 1;
    return 1;
}

/* name="value"[,name="value"...]; "le" is reserved in histograms. */
static int labels_ok(const char *labels, enum kind k)
{
    const char *s = labels;
    char name[NAME_MAX_LEN + 1];

    if (strlen(labels) > AL_METRICS_MAX_LABELS)
        return 0;
    while (*s) {
        const char *eq = strchr(s, '=');
        size_t n = eq ? (size_t)(eq - s) : 0;
        if (n == 0 || n > NAME_MAX_LEN)
            return 0;
        memcpy(name, s, n);
        name[n] = '\0';
        if (!name_ok(name, 0) || (k == K_HISTOGRAM && strcmp(name, "le") == 0))
            return 0;
        s = eq + 1;
        if (!label_value_ok(&s))
            return 0;
        if (*s == ',' && s[1])
            s++;
        else if (*s)
            return 0;
    }
    return 1;
}

static int bounds_ok(const double *b, size_t n)
{
    if (n > AL_METRICS_MAX_BUCKETS)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return 0;
    return 1;
}

/* ---- registry ---------------------------------------------------------- */

int al_metrics_new(struct al_metrics **out)
{
    struct al_metrics *m = calloc(1, sizeof(*m));

    if (!m)
        return AL_ERR_NOMEM;
    m->tab = calloc(TAB_INIT, sizeof(*m->tab));
    if (!m->tab) {
        free(m);
        return AL_ERR_NOMEM;
    }
    m->tabsize = TAB_INIT;
    *out = m;
    return 0;
}

void al_metrics_free(struct al_metrics *m)
{
    struct family *f, *fn;
    struct al_metric *s, *sn;

    if (!m)
        return;
    for (f = m->fams; f; f = fn) {
        fn = f->next;
        for (s = f->first; s; s = sn) {
            sn = s->next;
            free(s->labels);
            free(s->buckets);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
    }
    free(m->tab);
    free(m);
}

__attribute__((format(printf, 2, 3))) static struct al_metric *refuse(struct al_metrics *m,
                                                                      const char *fmt, ...)
{
    char why[256];
    va_list ap;

    if (m->warnings >= WARN_MAX)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    m->warnings++;
    AL_LOG_WARN("metrics.refused", "reason=\"%s\"%s", why,
                m->warnings == WARN_MAX ? " more=suppressed" : "");
    return NULL;
}

static uint64_t hash_key(const char *name, const char *labels)
{
    uint64_t h = 1469598103934665603ULL;

    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = labels; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static void grow_table(struct al_metrics *m)
{
    size_t size = m->tabsize * 2;
    struct al_metric **tab = calloc(size, sizeof(*tab));

    if (!tab)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < m->tabsize; i++) {
        struct al_metric *s, *sn;
        for (s = m->tab[i]; s; s = sn) {
            sn = s->hnext;
            s->hnext = tab[s->hash & (size - 1)];
            tab[s->hash & (size - 1)] = s;
        }
    }
    free(m->tab);
    m->tab = tab;
    m->tabsize = size;
}

static struct family *find_family(struct al_metrics *m, const char *name)
{
    for (struct family *f = m->fams; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static int same_shape(const struct family *f, enum kind k, const double *b, size_t nb)
{
    if (f->kind != k)
        return 0;
    return k != K_HISTOGRAM || (f->nbounds == nb && memcmp(f->bounds, b, nb * sizeof(*b)) == 0);
}

static struct family *new_family(struct al_metrics *m, enum kind k, const char *name,
                                 const char *help, const double *b, size_t nb)
{
    struct family *f = calloc(1, sizeof(*f));

    if (!f)
        return NULL;
    f->kind = k;
    f->name = strdup(name);
    f->help = strndup(help ? help : "", HELP_MAX_LEN);
    f->nbounds = nb;
    f->bounds = k == K_HISTOGRAM ? malloc(nb * sizeof(*b) + 1) : NULL;
    if (!f->name || !f->help || (k == K_HISTOGRAM && !f->bounds)) {
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
        return NULL;
    }
    if (nb)
        memcpy(f->bounds, b, nb * sizeof(*b));
    if (m->fams_tail)
        m->fams_tail->next = f;
    else
        m->fams = f;
    m->fams_tail = f;
    return f;
}

static struct al_metric *new_series(struct al_metrics *m, struct family *f, const char *labels,
                                    uint64_t h)
{
    struct al_metric *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->labels = strdup(labels);
    if (f->kind == K_HISTOGRAM)
        s->buckets = calloc(f->nbounds + 1, sizeof(*s->buckets));
    if (!s->labels || (f->kind == K_HISTOGRAM && !s->buckets)) {
        free(s->labels);
        free(s->buckets);
        free(s);
        return NULL;
    }
    s->fam = f;
    s->hash = h;
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
    s->hnext = m->tab[h & (m->tabsize - 1)];
    m->tab[h & (m->tabsize - 1)] = s;
    if (++m->nseries > m->tabsize)
        grow_table(m);
    return s;
}

static struct al_metric *get(struct al_metrics *m, enum kind k, const char *name, const char *help,
                             const char *labels, const double *b, size_t nb)
{
    struct family *f;
    struct al_metric *s;
    uint64_t h;

    if (!m || !name)
        return NULL;
    labels = labels ? labels : "";
    h = hash_key(name, labels);
    for (s = m->tab[h & (m->tabsize - 1)]; s; s = s->hnext)
        if (s->hash == h && strcmp(s->fam->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return same_shape(s->fam, k, b, nb) ? s : refuse(m, "%s: type or buckets differ", name);
    f = find_family(m, name);
    if (f && !same_shape(f, k, b, nb))
        return refuse(m, "%s: type or buckets differ", name);
    if (!f && !name_ok(name, 1))
        return refuse(m, "bad metric name");
    if (!labels_ok(labels, k))
        return refuse(m, "%s: bad label set", name);
    if (m->nseries >= AL_METRICS_MAX_SERIES)
        return refuse(m, "%s: series cap %d reached", name, AL_METRICS_MAX_SERIES);
    if (!f && !(f = new_family(m, k, name, help, b, nb)))
        return NULL;
    return new_series(m, f, labels, h);
}

struct al_metric *al_metrics_counter(struct al_metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return get(m, K_COUNTER, name, help, labels, NULL, 0);
}

struct al_metric *al_metrics_gauge(struct al_metrics *m, const char *name, const char *help,
                                   const char *labels)
{
    return get(m, K_GAUGE, name, help, labels, NULL, 0);
}

struct al_metric *al_metrics_histogram(struct al_metrics *m, const char *name, const char *help,
                                       const char *labels, const double *bounds, size_t nbounds)
{
    if (!bounds) {
        bounds = default_bounds;
        nbounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
    }
    if (!m || !bounds_ok(bounds, nbounds))
        return m ? refuse(m, "%s: bad histogram bounds", name ? name : "?") : NULL;
    return get(m, K_HISTOGRAM, name, help, labels, bounds, nbounds);
}

/* ---- updates ----------------------------------------------------------- */

void al_metric_add(struct al_metric *s, double v)
{
    if (!s || isnan(v))
        return;
    if (s->fam->kind == K_GAUGE || (s->fam->kind == K_COUNTER && v >= 0))
        s->value += v;
}

void al_metric_set(struct al_metric *s, double v)
{
    if (s && s->fam->kind != K_HISTOGRAM)
        s->value = v;
}

void al_metric_observe(struct al_metric *s, double v)
{
    size_t i = 0;

    if (!s || s->fam->kind != K_HISTOGRAM || isnan(v))
        return;
    while (i < s->fam->nbounds && v > s->fam->bounds[i])
        i++;
    s->buckets[i]++;
    s->count++;
    s->sum += v;
}

double al_metric_value(const struct al_metric *s)
{
    if (!s)
        return 0;
    return s->fam->kind == K_HISTOGRAM ? (double)s->count : s->value;
}

/* ---- rendering --------------------------------------------------------- */

__attribute__((format(printf, 2, 3))) static void bprintf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* Shortest text that reads back as v; Prometheus spellings for the specials. */
static const char *fmt_num(double v, char *buf, size_t n)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return buf;
    }
    snprintf(buf, n, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, n, "%.17g", v);
    return buf;
}

static void put_help(struct buf *b, const struct family *f)
{
    bprintf(b, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            bprintf(b, "\\\\");
        else if (*p == '\n')
            bprintf(b, "\\n");
        else
            bprintf(b, "%c", *p);
    }
    bprintf(b, "\n# TYPE %s %s\n", f->name, kind_names[f->kind]);
}

static void put_histogram(struct buf *b, const struct family *f, const struct al_metric *s)
{
    const char *sep = s->labels[0] ? "," : "";
    char num[32], le[32];
    uint64_t cum = 0;

    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += s->buckets[i];
        bprintf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, s->labels, sep,
                i < f->nbounds ? fmt_num(f->bounds[i], le, sizeof(le)) : "+Inf",
                (unsigned long long)cum);
    }
    if (s->labels[0]) {
        bprintf(b, "%s_sum{%s} %s\n", f->name, s->labels, fmt_num(s->sum, num, sizeof(num)));
        bprintf(b, "%s_count{%s} %llu\n", f->name, s->labels, (unsigned long long)s->count);
    } else {
        bprintf(b, "%s_sum %s\n", f->name, fmt_num(s->sum, num, sizeof(num)));
        bprintf(b, "%s_count %llu\n", f->name, (unsigned long long)s->count);
    }
}

int al_metrics_render(struct al_metrics *m, char **out, size_t *len)
{
    struct buf b = {0};
    char num[32];

    *out = NULL;
    *len = 0;
    b.cap = 4096;
    b.p = malloc(b.cap);
    if (!b.p)
        return AL_ERR_NOMEM;
    b.p[0] = '\0';
    for (const struct family *f = m ? m->fams : NULL; f; f = f->next) {
        put_help(&b, f);
        for (const struct al_metric *s = f->first; s; s = s->next) {
            if (f->kind == K_HISTOGRAM)
                put_histogram(&b, f, s);
            else if (s->labels[0])
                bprintf(&b, "%s{%s} %s\n", f->name, s->labels, fmt_num(s->value, num, sizeof(num)));
            else
                bprintf(&b, "%s %s\n", f->name, fmt_num(s->value, num, sizeof(num)));
        }
    }
    if (b.oom) {
        free(b.p);
        return AL_ERR_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

int al_metrics_label_escape(char *dst, size_t n, const char *src, size_t srclen)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;

    if (n == 0)
        return AL_ERR_TOOBIG;
    while (i < srclen) {
        char esc[2] = {0, 0};
        size_t l = utf8_len(s + i, srclen - i), need;
        const void *from = s + i;
        if (s[i] == '\\' || s[i] == '"' || s[i] == '\n') {
            esc[0] = '\\';
            esc[1] = s[i] == '\n' ? 'n' : (char)s[i];
            from = esc;
            need = 2;
        } else if (l == 0 || s[i] == '\0') {
            esc[0] = '?';
            from = esc;
            need = 1;
            l = 1;
        } else {
            need = l;
        }
        if (o + need >= n) {
            dst[o] = '\0';
            return AL_ERR_TOOBIG;
        }
        memcpy(dst + o, from, need);
        o += need;
        i += l ? l : 1;
    }
    dst[o] = '\0';
    return (int)o;
}
