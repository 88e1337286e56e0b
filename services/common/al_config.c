/*
 * al_config: loads a service's settings from defaults, a libconfig file, the
 * environment and the command line, in that order, into the caller's struct.
 *
 * Every layer goes through the same two steps: turn the input (text or a
 * libconfig setting) into a union val, then store it into the field after
 * freeing what an earlier layer stored there. A load keeps no state after it
 * returns; al_config_cleanup() frees what the fields own.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "al_config.h"
#include "al_err.h"

extern char **environ;

#define KEY_MAX   128 /* longest dotted key in a schema */
#define WHY_MAX   256 /* reason text of one error */
#define DEPTH_MAX 32  /* deepest setting al_config_errf() names */

/* Attached to the root setting of every tree we parse: names the source when
 * libconfig did not record a file for a setting. */
struct src_tag {
    const char *name;
    int has_lines; /* a file's text (lines mean something) vs an env/flag value */
};

union val {
    char *s;
    int i;
    double d;
    long long ll;
    size_t z;
    char **list;
};

struct flag_set {
    const struct al_cfg_field *f;
    const char *arg; /* argv entry, for messages */
    size_t namelen;  /* of "--name" in arg */
    const char *val;
};

struct load {
    const struct al_cfg_field *f;
    size_t n;
    char *dst;
    unsigned char *set; /* set[i]: field i given by file, env or flag */
    struct al_config_opts *o;
    char *const *envp;
    char *err;
    size_t errlen;
    struct flag_set *flags;
    size_t nflags;
    const char *config_file;
    int help, check;
};

static const char *const type_names[] = {"STRING",   "INT",  "BOOL", "DOUBLE",
                                         "DURATION", "SIZE", "LIST", "VALUE"};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
                                                      ...)
{
    va_list ap;

    if (errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return AL_ERR_CONFIG;
}

static void *field_ptr(const struct load *l, const struct al_cfg_field *f)
{
    return l->dst + f->offset;
}

static void free_list(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void clear_field(const struct al_cfg_field *f, void *p)
{
    switch (f->type) {
    case AL_CFG_STRING:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case AL_CFG_STRLIST:
        free_list(*(char ***)p);
        *(char ***)p = NULL;
        break;
    case AL_CFG_CUSTOM:
        if (f->custom_free)
            f->custom_free(p);
        break;
    default:
        break;
    }
}

/* Takes ownership of v's heap parts. */
static void store(const struct al_cfg_field *f, void *p, union val *v)
{
    clear_field(f, p);
    switch (f->type) {
    case AL_CFG_STRING:
        *(char **)p = v->s;
        break;
    case AL_CFG_INT:
    case AL_CFG_BOOL:
        *(int *)p = v->i;
        break;
    case AL_CFG_DOUBLE:
        *(double *)p = v->d;
        break;
    case AL_CFG_DURATION_MS:
        *(long long *)p = v->ll;
        break;
    case AL_CFG_SIZE:
        *(size_t *)p = v->z;
        break;
    case AL_CFG_STRLIST:
        *(char ***)p = v->list;
        break;
    case AL_CFG_CUSTOM:
        break;
    }
}

/* ---- names ------------------------------------------------------------- */

int al_config_env_name(const char *path, char *buf, size_t n)
{
    size_t o = 0;
    static const char pfx[] = "AIRLOCK_";

    if (n < sizeof(pfx) + strlen(path))
        return AL_ERR_TOOBIG;
    memcpy(buf, pfx, sizeof(pfx) - 1);
    o = sizeof(pfx) - 1;
    for (const char *p = path; *p; p++)
        buf[o++] = (*p == '.' || *p == '-') ? '_' : (char)toupper((unsigned char)*p);
    buf[o] = '\0';
    return 0;
}

/* Compares a flag name (len bytes) with a key, '-' and '_' being equal. */
static int flag_matches(const char *name, size_t len, const char *key)
{
    size_t i;

    for (i = 0; i < len && key[i]; i++) {
        char a = name[i] == '-' ? '_' : name[i];
        char b = key[i] == '-' ? '_' : key[i];
        if (a != b)
            return 0;
    }
    return i == len && key[i] == '\0';
}

static const struct al_cfg_field *find_field(const struct load *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->f[i].path, key) == 0)
            return &l->f[i];
    return NULL;
}

static const struct al_cfg_field *find_flag(const struct load *l, const char *name, size_t len)
{
    for (size_t i = 0; i < l->n; i++)
        if (flag_matches(name, len, l->f[i].path))
            return &l->f[i];
    return NULL;
}

/* True when some field lives below key ("tls" for "tls.cert_file"). */
static int is_group(const struct load *l, const char *key)
{
    size_t k = strlen(key);

    for (size_t i = 0; i < l->n; i++)
        if (strncmp(l->f[i].path, key, k) == 0 && l->f[i].path[k] == '.')
            return 1;
    return 0;
}

static const char *env_get(const struct load *l, const char *name)
{
    size_t k = strlen(name);

    for (char *const *e = l->envp; e && *e; e++)
        if (strncmp(*e, name, k) == 0 && (*e)[k] == '=')
            return *e + k + 1;
    return NULL;
}

/* ---- scalar text parsers ----------------------------------------------- */

static int parse_digits(const char *s, unsigned long long *v, const char **end)
{
    unsigned long long x = 0;

    if (!s || !isdigit((unsigned char)*s))
        return AL_ERR_INVAL;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (x > (ULLONG_MAX - d) / 10)
            return AL_ERR_INVAL;
        x = x * 10 + d;
    }
    *v = x;
    *end = s;
    return 0;
}

int al_config_parse_duration(const char *s, long long *ms)
{
    static const struct {
        const char *u;
        long long mult;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
    unsigned long long v;
    const char *u;

    if (parse_digits(s, &v, &u) < 0)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(u, units[i].u) != 0)
            continue;
        if (v > (unsigned long long)(LLONG_MAX / units[i].mult))
            return AL_ERR_INVAL;
        *ms = (long long)v * units[i].mult;
        return 0;
    }
    return AL_ERR_INVAL;
}

int al_config_parse_size(const char *s, size_t *bytes)
{
    static const struct {
        const char *u;
        unsigned shift;
    } units[] = {{"", 0}, {"b", 0}, {"kib", 10}, {"mib", 20}, {"gib", 30}, {"tib", 40}};
    unsigned long long v;
    const char *u;

    if (parse_digits(s, &v, &u) < 0)
        return AL_ERR_INVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(u, units[i].u) != 0)
            continue;
        /* LLONG_MAX so the value also fits the schema's long long bounds */
        if (v > ((unsigned long long)LLONG_MAX >> units[i].shift) || v << units[i].shift > SIZE_MAX)
            return AL_ERR_INVAL;
        *bytes = (size_t)(v << units[i].shift);
        return 0;
    }
    return AL_ERR_INVAL;
}

/* Decimal or 0x hex, optional '-', nothing else. */
static int parse_ll(const char *s, long long *v)
{
    char *end;
    const char *p = s;
    int base = 10;

    if (*p == '-')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        base = 16;
    if (!isdigit((unsigned char)*p))
        return AL_ERR_INVAL;
    errno = 0;
    *v = strtoll(s, &end, base);
    if (errno || *end != '\0')
        return AL_ERR_INVAL;
    return 0;
}

static int parse_bool(const char *s, int *v)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *v = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *v = 0;
            return 0;
        }
    }
    return AL_ERR_INVAL;
}

static int parse_double(const char *s, double *v)
{
    char *end;

    if (!*s || isspace((unsigned char)*s))
        return AL_ERR_INVAL;
    errno = 0;
    *v = strtod(s, &end);
    if (errno || *end != '\0' || !isfinite(*v))
        return AL_ERR_INVAL;
    return 0;
}

/* Splits "a, b,c" into a NULL-terminated heap array; "" gives an empty one. */
static int parse_list(const char *s, char ***out, char *why, size_t wl)
{
    size_t cnt = 1, k = 0;
    char **v;
    const char *p = s;

    for (const char *c = s; *c; c++)
        cnt += *c == ',';
    v = calloc(cnt + 1, sizeof(*v));
    if (!v)
        return AL_ERR_NOMEM;
    while (*s && *p) {
        const char *e = strchr(p, ',');
        const char *end = e ? e : p + strlen(p);
        while (p < end && isspace((unsigned char)*p))
            p++;
        while (end > p && isspace((unsigned char)end[-1]))
            end--;
        if (end == p) {
            free_list(v);
            return fail(why, wl, "empty list item");
        }
        v[k] = strndup(p, (size_t)(end - p));
        if (!v[k++]) {
            free_list(v);
            return AL_ERR_NOMEM;
        }
        p = e ? e + 1 : end + strlen(end);
        if (e && !*p) {
            free_list(v);
            return fail(why, wl, "empty list item");
        }
    }
    *out = v;
    return 0;
}

/* ---- ranges ------------------------------------------------------------ */

static int check_range(const struct al_cfg_field *f, long long v, char *why, size_t wl)
{
    long long lo = f->min, hi = f->max;

    if (!(f->min < f->max)) {
        lo = f->type == AL_CFG_INT ? INT_MIN : 0;
        hi = f->type == AL_CFG_INT ? INT_MAX : LLONG_MAX;
    }
    if (v < lo || v > hi)
        return fail(why, wl, "%lld out of range [%lld, %lld]", v, lo, hi);
    return 0;
}

static int check_double(const struct al_cfg_field *f, double v, char *why, size_t wl)
{
    if (!isfinite(v))
        return fail(why, wl, "not a finite number");
    if (f->min < f->max && (v < (double)f->min || v > (double)f->max))
        return fail(why, wl, "%g out of range [%lld, %lld]", v, f->min, f->max);
    return 0;
}

/* Range-checks an integer-ish value and puts it in the field's C type. */
static int integral(const struct al_cfg_field *f, long long x, union val *v, char *why, size_t wl)
{
    int rc = check_range(f, x, why, wl);

    if (rc < 0)
        return rc;
    if (f->type == AL_CFG_INT)
        v->i = (int)x;
    else if (f->type == AL_CFG_SIZE)
        v->z = (size_t)x;
    else
        v->ll = x;
    return 0;
}

/* Parses text (default, env, flag) for every type but CUSTOM. */
static int parse_text(const struct al_cfg_field *f, const char *s, union val *v, char *why,
                      size_t wl)
{
    long long x;
    size_t z;

    switch (f->type) {
    case AL_CFG_STRING:
        v->s = strdup(s);
        return v->s ? 0 : AL_ERR_NOMEM;
    case AL_CFG_INT:
        if (parse_ll(s, &x) < 0)
            return fail(why, wl, "expected an integer, got \"%.64s\"", s);
        return integral(f, x, v, why, wl);
    case AL_CFG_BOOL:
        if (parse_bool(s, &v->i) < 0)
            return fail(why, wl, "expected true or false, got \"%.64s\"", s);
        return 0;
    case AL_CFG_DOUBLE:
        if (parse_double(s, &v->d) < 0)
            return fail(why, wl, "expected a number, got \"%.64s\"", s);
        return check_double(f, v->d, why, wl);
    case AL_CFG_DURATION_MS:
        if (al_config_parse_duration(s, &x) < 0)
            return fail(why, wl, "expected a duration like 250ms, 5s, 2m, 1h, got \"%.64s\"", s);
        return integral(f, x, v, why, wl);
    case AL_CFG_SIZE:
        if (al_config_parse_size(s, &z) < 0)
            return fail(why, wl, "expected a size like 4096, 64KiB, 4MiB, 1GiB, got \"%.64s\"", s);
        return integral(f, (long long)z, v, why, wl);
    case AL_CFG_STRLIST:
        return parse_list(s, &v->list, why, wl);
    case AL_CFG_CUSTOM:
        break;
    }
    return fail(why, wl, "bad field type");
}

/* ---- libconfig settings ------------------------------------------------ */

static const char *setting_type_name(const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_GROUP:
        return "a group";
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    default:
        return "nothing";
    }
}

static int is_int(const config_setting_t *s)
{
    return config_setting_type(s) == CONFIG_TYPE_INT || config_setting_type(s) == CONFIG_TYPE_INT64;
}

static int wrong_type(const config_setting_t *s, const char *want, char *why, size_t wl)
{
    return fail(why, wl, "expected %s, got %s", want, setting_type_name(s));
}

static int setting_list(const config_setting_t *s, char ***out, char *why, size_t wl)
{
    int cnt = config_setting_length(s);
    char **v;

    if (!config_setting_is_array(s) && !config_setting_is_list(s))
        return wrong_type(s, "a list of strings", why, wl);
    v = calloc((size_t)cnt + 1, sizeof(*v));
    if (!v)
        return AL_ERR_NOMEM;
    for (int i = 0; i < cnt; i++) {
        const char *e = config_setting_get_string_elem(s, (unsigned)i);
        if (!e) {
            free_list(v);
            return fail(why, wl, "item %d: expected a string", i);
        }
        v[i] = strdup(e);
        if (!v[i]) {
            free_list(v);
            return AL_ERR_NOMEM;
        }
    }
    *out = v;
    return 0;
}

/* Scalar-or-unit-string settings: DURATION_MS and SIZE. */
static int setting_units(const struct al_cfg_field *f, const config_setting_t *s, union val *v,
                         char *why, size_t wl)
{
    const char *str = config_setting_get_string(s);

    if (is_int(s))
        return integral(f, config_setting_get_int64(s), v, why, wl);
    if (!str)
        return wrong_type(s, f->type == AL_CFG_SIZE ? "a size" : "a duration", why, wl);
    return parse_text(f, str, v, why, wl);
}

/* Parses a file setting for every type but CUSTOM. */
static int parse_setting(const struct al_cfg_field *f, const config_setting_t *s, union val *v,
                         char *why, size_t wl)
{
    int t = config_setting_type(s);

    switch (f->type) {
    case AL_CFG_STRING:
        if (t != CONFIG_TYPE_STRING)
            return wrong_type(s, "a string", why, wl);
        return parse_text(f, config_setting_get_string(s), v, why, wl);
    case AL_CFG_INT:
        if (!is_int(s))
            return wrong_type(s, "an integer", why, wl);
        return integral(f, config_setting_get_int64(s), v, why, wl);
    case AL_CFG_BOOL:
        if (t != CONFIG_TYPE_BOOL)
            return wrong_type(s, "a boolean", why, wl);
        v->i = config_setting_get_bool(s) ? 1 : 0;
        return 0;
    case AL_CFG_DOUBLE:
        if (t != CONFIG_TYPE_FLOAT && !is_int(s))
            return wrong_type(s, "a number", why, wl);
        v->d = t == CONFIG_TYPE_FLOAT ? config_setting_get_float(s)
                                      : (double)config_setting_get_int64(s);
        return check_double(f, v->d, why, wl);
    case AL_CFG_DURATION_MS:
    case AL_CFG_SIZE:
        return setting_units(f, s, v, why, wl);
    case AL_CFG_STRLIST:
        return setting_list(s, &v->list, why, wl);
    case AL_CFG_CUSTOM:
        break;
    }
    return fail(why, wl, "bad field type");
}

/* The file (or env/flag tag) s came from, and whether lines mean anything. */
static const char *setting_source(const config_setting_t *s, int *has_lines)
{
    const config_setting_t *root = s;
    const struct src_tag *t;

    *has_lines = 1;
    if (config_setting_source_file(s))
        return config_setting_source_file(s);
    while (root->parent)
        root = root->parent;
    t = root->hook;
    if (!t)
        return "<config>";
    *has_lines = t->has_lines;
    return t->name;
}

static void setting_where(const config_setting_t *s, char *buf, size_t n)
{
    int lines;
    const char *src = setting_source(s, &lines);

    if (lines)
        snprintf(buf, n, "%s:%u", src, config_setting_source_line(s));
    else
        snprintf(buf, n, "%s", src);
}

/* "pools[1].name": names of groups joined by '.', list elements as [i]. */
static void setting_key(const config_setting_t *s, char *buf, size_t n)
{
    const config_setting_t *chain[DEPTH_MAX];
    size_t depth = 0, o = 0;

    for (; s && s->parent && depth < DEPTH_MAX; s = s->parent)
        chain[depth++] = s;
    buf[0] = '\0';
    while (depth-- > 0 && o < n) {
        const config_setting_t *c = chain[depth];
        const char *name = config_setting_name(c);
        int w;
        if (name)
            w = snprintf(buf + o, n - o, "%s%s", o ? "." : "", name);
        else
            w = snprintf(buf + o, n - o, "[%d]", config_setting_index(c));
        o += w > 0 ? (size_t)w : 0;
    }
}

int al_config_errf(char *err, size_t errlen, const config_setting_t *s, const char *fmt, ...)
{
    char where[512], key[256], why[WHY_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    setting_where(s, where, sizeof(where));
    setting_key(s, key, sizeof(key));
    return fail(err, errlen, "%s: %s: %s", where, key, why);
}

/*
 * Runs a custom parser on s. Its message may already name the spot
 * (al_config_errf) or be a bare reason, which gets the location of s.
 */
static int run_custom(struct load *l, const struct al_cfg_field *f, const config_setting_t *s)
{
    char why[WHY_MAX] = "";
    void *p = field_ptr(l, f);
    const char *src;
    size_t k;
    int rc, lines;

    clear_field(f, p);
    rc = f->custom(s, p, why, sizeof(why));
    if (rc == 0)
        return 0;
    if (rc == AL_ERR_NOMEM)
        return fail(l->err, l->errlen, "%s: out of memory", f->path);
    src = setting_source(s, &lines);
    k = strlen(src);
    if (strncmp(why, src, k) == 0 && why[k] == ':')
        return fail(l->err, l->errlen, "%s", why); /* already names its spot */
    return al_config_errf(l->err, l->errlen, s, "%s", why[0] ? why : "invalid value");
}

static int apply_setting(struct load *l, const struct al_cfg_field *f, const config_setting_t *s)
{
    char why[WHY_MAX];
    union val v;
    int rc;

    if (f->type == AL_CFG_CUSTOM)
        return run_custom(l, f, s);
    rc = parse_setting(f, s, &v, why, sizeof(why));
    if (rc == AL_ERR_NOMEM)
        return fail(l->err, l->errlen, "%s: out of memory", f->path);
    if (rc < 0)
        return al_config_errf(l->err, l->errlen, s, "%s", why);
    store(f, field_ptr(l, f), &v);
    return 0;
}

/* "a.b", "<text>" -> "a = { b = <text>; };" (heap), NULL on OOM. */
static char *wrap_value(const char *path, const char *text)
{
    size_t groups = 0, cap, o = 0;
    const char *seg = path;
    char *src;

    for (const char *p = path; *p; p++)
        groups += *p == '.';
    cap = strlen(text) + strlen(path) + groups * 8 + 8;
    src = malloc(cap);
    if (!src)
        return NULL;
    for (const char *dot; (dot = strchr(seg, '.')); seg = dot + 1)
        o += (size_t)snprintf(src + o, cap - o, "%.*s = { ", (int)(dot - seg), seg);
    o += (size_t)snprintf(src + o, cap - o, "%s = %s;", seg, text);
    while (groups--)
        o += (size_t)snprintf(src + o, cap - o, " };");
    return src;
}

/*
 * CUSTOM from text: wraps the value as "a = { b = <text>; };" for key a.b so
 * the custom parser sees a normal setting and messages name the full key.
 */
static int apply_custom_text(struct load *l, const struct al_cfg_field *f, const char *text,
                             const char *where)
{
    struct src_tag tag = {where, 0};
    config_setting_t *s;
    config_t c;
    char *src;
    int rc = AL_ERR_NOMEM;

    config_init(&c);
    src = wrap_value(f->path, text);
    if (!src)
        goto out;
    rc = fail(l->err, l->errlen, "%s: not a single libconfig value", where);
    if (!config_read_string(&c, src))
        goto out;
    /* after the read: reading replaces the root setting */
    config_setting_set_hook(config_root_setting(&c), &tag);
    /* exactly one member at each level: the value may not smuggle in more keys */
    s = config_root_setting(&c);
    for (const char *seg = f->path;;) {
        const char *dot = strchr(seg, '.'), *name;
        size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
        if (!config_setting_is_group(s) || config_setting_length(s) != 1)
            goto out;
        s = config_setting_get_elem(s, 0);
        name = config_setting_name(s);
        if (!name || strlen(name) != len || strncmp(name, seg, len) != 0)
            goto out;
        if (!dot)
            break;
        seg = dot + 1;
    }
    rc = run_custom(l, f, s);
out:
    config_destroy(&c);
    free(src);
    return rc;
}

/* Applies text from a default, env var or flag; where names it in errors. */
static int apply_text(struct load *l, const struct al_cfg_field *f, const char *text,
                      const char *where)
{
    char why[WHY_MAX];
    union val v;
    int rc;

    if (f->type == AL_CFG_CUSTOM)
        return apply_custom_text(l, f, text, where);
    rc = parse_text(f, text, &v, why, sizeof(why));
    if (rc == AL_ERR_NOMEM)
        return fail(l->err, l->errlen, "%s: out of memory", where);
    if (rc < 0)
        return fail(l->err, l->errlen, "%s: %s", where, why);
    store(f, field_ptr(l, f), &v);
    return 0;
}

/* ---- schema ------------------------------------------------------------ */

static int check_path(const char *p)
{
    size_t len = strlen(p);

    if (len == 0 || len >= KEY_MAX)
        return AL_ERR_INVAL;
    for (const char *seg = p; *seg;) {
        if (!islower((unsigned char)*seg))
            return AL_ERR_INVAL;
        while (islower((unsigned char)*seg) || isdigit((unsigned char)*seg) || *seg == '_')
            seg++;
        if (*seg == '.' && seg[1])
            seg++;
        else if (*seg)
            return AL_ERR_INVAL;
    }
    return 0;
}

static int check_pair(const struct al_cfg_field *a, const struct al_cfg_field *b, char *err,
                      size_t errlen)
{
    char ea[KEY_MAX + 16], eb[KEY_MAX + 16];
    size_t k = strlen(a->path);

    if (strncmp(a->path, b->path, k) == 0 && (b->path[k] == '\0' || b->path[k] == '.'))
        goto bad;
    k = strlen(b->path);
    if (strncmp(a->path, b->path, k) == 0 && a->path[k] == '.')
        goto bad;
    al_config_env_name(a->path, ea, sizeof(ea));
    al_config_env_name(b->path, eb, sizeof(eb));
    if (strcmp(ea, eb) == 0)
        goto bad;
    return 0;
bad:
    fail(err, errlen, "schema: keys %s and %s collide", a->path, b->path);
    return AL_ERR_INVAL;
}

static int check_schema(const struct al_cfg_field *f, size_t n, char *err, size_t errlen)
{
    static const char *const reserved[] = {"config", "help", "check_config"};

    for (size_t i = 0; i < n; i++) {
        int rc = 0;
        if (!f[i].path || check_path(f[i].path) < 0) {
            fail(err, errlen, "schema: bad key \"%s\"", f[i].path ? f[i].path : "(null)");
            return AL_ERR_INVAL;
        }
        for (size_t r = 0; r < 3; r++)
            if (strcmp(f[i].path, reserved[r]) == 0)
                rc = AL_ERR_INVAL;
        if ((unsigned)f[i].type > AL_CFG_CUSTOM || (f[i].type == AL_CFG_CUSTOM && !f[i].custom) ||
            (f[i].required && f[i].def))
            rc = AL_ERR_INVAL;
        if (rc < 0) {
            fail(err, errlen, "schema: bad field %s", f[i].path);
            return rc;
        }
        for (size_t j = 0; j < i; j++)
            if ((rc = check_pair(&f[j], &f[i], err, errlen)) < 0)
                return rc;
    }
    return 0;
}

/* ---- layers ------------------------------------------------------------ */

static int load_defaults(struct load *l)
{
    char where[KEY_MAX + 16];

    for (size_t i = 0; i < l->n; i++) {
        const struct al_cfg_field *f = &l->f[i];
        int rc;
        if (!f->def)
            continue;
        snprintf(where, sizeof(where), "default %s", f->path);
        rc = apply_text(l, f, f->def, where);
        if (rc < 0)
            return rc == AL_ERR_CONFIG ? AL_ERR_INVAL : rc;
    }
    return 0;
}

static int walk(struct load *l, const config_setting_t *grp, const char *prefix)
{
    char key[KEY_MAX * 2], alt[KEY_MAX * 2];
    int cnt = config_setting_length(grp);

    for (int i = 0; i < cnt; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const struct al_cfg_field *f;
        int rc;
        snprintf(key, sizeof(key), "%s%s%s", prefix, *prefix ? "." : "", config_setting_name(s));
        if ((f = find_field(l, key))) {
            if ((rc = apply_setting(l, f, s)) < 0)
                return rc;
            l->set[f - l->f] = 1;
        } else if (is_group(l, key)) {
            if (!config_setting_is_group(s))
                return al_config_errf(l->err, l->errlen, s, "expected a group, got %s",
                                      setting_type_name(s));
            if ((rc = walk(l, s, key)) < 0)
                return rc;
        } else {
            /* a friendlier message for the common cert-file / cert_file slip */
            snprintf(alt, sizeof(alt), "%s", key);
            for (char *c = alt; *c; c++)
                *c = *c == '-' ? '_' : *c;
            if (strcmp(alt, key) != 0 && (find_field(l, alt) || is_group(l, alt)))
                return al_config_errf(l->err, l->errlen, s, "unknown key (did you mean %s?)", alt);
            return al_config_errf(l->err, l->errlen, s, "unknown key");
        }
    }
    return 0;
}

static int load_file(struct load *l)
{
    const char *name =
        l->o->text ? (l->o->text_name ? l->o->text_name : "<config>") : l->config_file;
    struct src_tag tag = {name, 1};
    config_t c;
    FILE *fp = NULL;
    int rc, ok;

    if (!l->o->text && !l->config_file)
        return 0;
    config_init(&c);
    if (l->o->text) {
        ok = config_read_string(&c, l->o->text);
    } else {
        fp = fopen(l->config_file, "re");
        if (!fp) {
            rc = fail(l->err, l->errlen, "%s: %s", name, strerror(errno));
            goto out;
        }
        ok = config_read(&c, fp);
    }
    if (!ok) {
        rc = fail(l->err, l->errlen, "%s:%d: %s",
                  config_error_file(&c) ? config_error_file(&c) : name, config_error_line(&c),
                  config_error_text(&c) ? config_error_text(&c) : "parse error");
        goto out;
    }
    config_setting_set_hook(config_root_setting(&c), &tag); /* reading replaced the root */
    rc = walk(l, config_root_setting(&c), "");
out:
    if (fp)
        fclose(fp);
    config_destroy(&c);
    return rc;
}

static int load_env(struct load *l)
{
    char name[KEY_MAX + 16], where[KEY_MAX + 32];

    for (size_t i = 0; i < l->n; i++) {
        const char *v;
        int rc;
        al_config_env_name(l->f[i].path, name, sizeof(name));
        v = env_get(l, name);
        if (!v || !*v)
            continue;
        snprintf(where, sizeof(where), "env %s", name);
        if ((rc = apply_text(l, &l->f[i], v, where)) < 0)
            return rc;
        l->set[i] = 1;
    }
    return 0;
}

static int load_flags(struct load *l)
{
    char where[512];

    for (size_t i = 0; i < l->nflags; i++) {
        const struct flag_set *fs = &l->flags[i];
        int rc;
        snprintf(where, sizeof(where), "flag %.*s", (int)fs->namelen, fs->arg);
        if ((rc = apply_text(l, fs->f, fs->val, where)) < 0)
            return rc;
        l->set[fs->f - l->f] = 1;
    }
    return 0;
}

static int check_required(struct load *l)
{
    char env[KEY_MAX + 16];

    for (size_t i = 0; i < l->n; i++) {
        if (!l->f[i].required || l->set[i])
            continue;
        al_config_env_name(l->f[i].path, env, sizeof(env));
        return fail(l->err, l->errlen, "%s: required; set it in the config file, %s or --%s",
                    l->f[i].path, env, l->f[i].path);
    }
    return 0;
}

/* ---- command line ------------------------------------------------------ */

static int is_builtin(const char *name, size_t len, const char *builtin)
{
    return flag_matches(name, len, builtin);
}

/* One argv entry starting with "--"; *i may advance over a separate value. */
static int scan_flag(struct load *l, int argc, char **argv, int *i)
{
    const char *a = argv[*i], *name = a + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const char *val = eq ? eq + 1 : NULL;
    const struct al_cfg_field *f = NULL;

    if (is_builtin(name, len, "help")) {
        l->help = 1;
        return 0;
    }
    if (is_builtin(name, len, "check_config")) {
        l->check = 1;
        return 0;
    }
    if (!is_builtin(name, len, "config") && !(f = find_flag(l, name, len)))
        return fail(l->err, l->errlen, "flag %.*s: unknown flag (see --help)", (int)len + 2, a);
    if (!val && f && f->type == AL_CFG_BOOL)
        val = "true";
    if (!val) {
        if (*i + 1 >= argc)
            return fail(l->err, l->errlen, "flag %.*s: needs a value", (int)len + 2, a);
        val = argv[++*i];
    }
    if (!f) {
        l->config_file = val;
        return 0;
    }
    l->flags[l->nflags++] = (struct flag_set){f, a, len + 2, val};
    return 0;
}

static int scan_args(struct load *l, int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        int rc;
        if (l->o->allow_args && strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-h") == 0) {
            l->help = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0' || a[2] == '=') {
            if (l->o->allow_args && a[0] != '-')
                break;
            return fail(l->err, l->errlen, "flag %.64s: unexpected argument (see --help)", a);
        }
        if ((rc = scan_flag(l, argc, argv, &i)) < 0)
            return rc;
    }
    l->o->argi = i;
    return 0;
}

static void print_help(const struct load *l, const char *prog)
{
    FILE *fp = l->o->help_out ? l->o->help_out : stdout;
    char env[KEY_MAX + 16];

    fprintf(fp, "usage: %s [--config FILE] [--check-config] [--help] [--KEY=VALUE ...]\n", prog);
    if (l->o->summary)
        fprintf(fp, "%s\n", l->o->summary);
    fprintf(fp, "\nEach key is read from, lowest first: its default, the config file (--config\n"
                "FILE or AIRLOCK_CONFIG, libconfig syntax), the environment, the flag.\n"
                "Secrets are never values: such keys take the path of a file holding them.\n\n"
                "  --config FILE   config file (env AIRLOCK_CONFIG)\n"
                "  --check-config  validate the configuration and exit\n\n");
    for (size_t i = 0; i < l->n; i++) {
        const struct al_cfg_field *f = &l->f[i];
        al_config_env_name(f->path, env, sizeof(env));
        fprintf(fp, "  --%s=%s%s\n", f->path, type_names[f->type],
                f->required ? "  (required)" : "");
        if (f->help)
            fprintf(fp, "      %s\n", f->help);
        fprintf(fp, "      env %s; default: %s", env,
                !f->def   ? "none"
                : *f->def ? f->def
                          : "\"\" (empty)");
        if (f->min < f->max && f->type != AL_CFG_STRING && f->type != AL_CFG_STRLIST)
            fprintf(fp, "; range [%lld, %lld]", f->min, f->max);
        fprintf(fp, "\n");
    }
}

/* ---- entry points ------------------------------------------------------ */

static int run(struct load *l, int argc, char **argv)
{
    int rc;

    if ((rc = check_schema(l->f, l->n, l->err, l->errlen)) < 0)
        return rc;
    if ((rc = scan_args(l, argc, argv)) < 0)
        return rc;
    if (l->help) {
        print_help(l, l->o->prog ? l->o->prog : (argc > 0 ? argv[0] : "airlock"));
        l->o->help_shown = 1;
        return 0;
    }
    l->o->check_only = l->check;
    if (!l->config_file)
        l->config_file = env_get(l, "AIRLOCK_CONFIG");
    if (l->config_file && !*l->config_file)
        l->config_file = NULL;
    l->o->config_file = l->o->text ? NULL : l->config_file;
    if ((rc = load_defaults(l)) < 0 || (rc = load_file(l)) < 0 || (rc = load_env(l)) < 0 ||
        (rc = load_flags(l)) < 0)
        return rc;
    return check_required(l);
}

int al_config_load(const struct al_cfg_field *fields, size_t n, void *dst, int argc, char **argv,
                   struct al_config_opts *opts, char *err, size_t errlen)
{
    struct al_config_opts local = {0};
    struct load l = {.f = fields, .n = n, .dst = dst, .err = err, .errlen = errlen};
    int rc = AL_ERR_NOMEM;

    if (errlen)
        err[0] = '\0';
    if ((n && (!fields || !dst)) || argc < 0 || (argc > 0 && !argv)) {
        fail(err, errlen, "al_config_load: bad arguments");
        return AL_ERR_INVAL;
    }
    l.o = opts ? opts : &local;
    l.o->check_only = l.o->help_shown = 0;
    l.o->config_file = NULL;
    l.o->argi = argc;
    l.envp = l.o->envp ? l.o->envp : environ;
    l.set = calloc(n + 1, 1);
    l.flags = calloc((size_t)argc + 1, sizeof(*l.flags));
    if (!l.set || !l.flags) {
        fail(err, errlen, "out of memory");
        goto out;
    }
    rc = run(&l, argc, argv);
    if (rc == AL_ERR_NOMEM && errlen && !err[0])
        fail(err, errlen, "out of memory");
out:
    free(l.set);
    free(l.flags);
    return rc;
}

void al_config_cleanup(const struct al_cfg_field *fields, size_t n, void *dst)
{
    if (!fields || !dst)
        return;
    for (size_t i = 0; i < n; i++)
        clear_field(&fields[i], (char *)dst + fields[i].offset);
}
