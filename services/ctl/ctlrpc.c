/*
 * ctlrpc: connection flags, identity loading, blocking unary calls with
 * error reporting, and formatting helpers for airlockctl's gRPC commands
 * (see ctlrpc.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ev.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "airlock/v1/common.pb-c.h"
#include "al_err.h"
#include "al_grpc.h"
#include "al_grpc_client.h"
#include "al_log.h"
#include "al_tls.h"
#include "ctl.h"
#include "ctlrpc.h"

#define PATH_LEN 1024

struct ctl_rpc {
    struct ctl_rpc_opts o;
    struct ev_loop *loop;
    struct al_tls *tls;
    struct al_grpc_channel *ch;
    int quiet;
    char last_err[1024]; /* the last failure, as printed */
    char *bearer;       /* "Bearer <key>", wiped on close */
    size_t bearer_len;
};

static const char *svc_name(const struct ctl_rpc_opts *o)
{
    return o->service ? o->service : "credstore";
}

/* ---------- flags ---------- */

void ctl_rpc_opts_init(struct ctl_rpc_opts *o, const char *what, const char *default_identity,
                       double timeout_s)
{
    memset(o, 0, sizeof(*o));
    o->what = what;
    o->default_identity = default_identity;
    o->timeout_s = timeout_s;
}

void ctl_rpc_help(const struct ctl_rpc_opts *o)
{
    printf("\nconnection:\n"
           "  --addr HOST:PORT     %s address (default $%s, else %s)\n"
           "  --identity ROLE/NAME mTLS identity from $AIRLOCK_HOME/pki (default %s)\n"
           "  --cert FILE --key FILE\n"
           "                       client certificate and key instead of --identity\n"
           "  --ca FILE            CA bundle the server must chain to\n"
           "                       (default $AIRLOCK_HOME/pki/ca.crt)\n"
           "  --timeout SECONDS    deadline of each call (default %g)\n"
           "Exit status: 0 done, 1 the call or operation failed (gRPC status, message and\n"
           "ErrorDetail reason on stderr), 2 usage error.\n",
           svc_name(o), o->addr_env ? o->addr_env : CTL_CREDSTORE_ADDR_ENV,
           o->addr_default ? o->addr_default : CTL_CREDSTORE_ADDR_DEFAULT, o->default_identity,
           o->timeout_s);
}

int ctl_rpc_opt(struct ctl_rpc_opts *o, int c, const char *arg)
{
    char *end;

    switch (c) {
    case CTL_OPT_ADDR:
        o->addr = arg;
        return 1;
    case CTL_OPT_IDENTITY:
        o->identity = arg;
        return 1;
    case CTL_OPT_CERT:
        o->cert = arg;
        return 1;
    case CTL_OPT_KEY:
        o->key = arg;
        return 1;
    case CTL_OPT_CA:
        o->ca = arg;
        return 1;
    case CTL_OPT_TIMEOUT:
        errno = 0;
        o->timeout_s = strtod(arg, &end);
        if (errno || end == arg || *end || !(o->timeout_s > 0 && o->timeout_s <= 86400))
            return ctl_usage_error(o->what, "--timeout needs seconds in (0, 86400]");
        return 1;
    default:
        return 0;
    }
}

int ctl_getopt(const char *what, int argc, char **argv, const char *shorts, const struct option *lo)
{
    int c;

    opterr = 0;
    c = getopt_long(argc, argv, shorts, lo, NULL);
    if (c == ':') {
        ctl_usage_error(what, "%s needs a value", argv[optind - 1]);
        return '?';
    }
    if (c == '?') {
        if (optopt && optopt < 0x100)
            ctl_usage_error(what, "unknown option '-%c'", optopt);
        else
            ctl_usage_error(what, "unknown option '%s'", argv[optind - 1]);
    }
    return c;
}

int ctl_rpc_identity_paths(const struct ctl_rpc_opts *o, char *cert, char *key, char *ca, size_t n)
{
    char home[512], ident[128];
    const char *id = o->identity ? o->identity : o->default_identity;
    char *slash;
    int hr = ctl_home(home, sizeof(home));

    if ((o->cert == NULL) != (o->key == NULL))
        return ctl_usage_error(o->what, "--cert and --key go together");
    if (hr < 0 && (!o->cert || !o->ca)) {
        fprintf(stderr, "airlockctl: %s: no home directory; give --cert, --key and --ca\n",
                o->what);
        return CTL_EXIT_FAIL;
    }
    if ((size_t)snprintf(ident, sizeof(ident), "%s", id) >= sizeof(ident) ||
        !(slash = strchr(ident, '/')) || slash == ident || !slash[1] || strchr(slash + 1, '/'))
        return ctl_usage_error(o->what, "--identity must be ROLE/NAME");
    *slash = '-';
    if ((o->cert ? snprintf(cert, n, "%s", o->cert)
                 : snprintf(cert, n, "%s/pki/%s.crt", home, ident)) >= (int)n ||
        (o->key ? snprintf(key, n, "%s", o->key)
                : snprintf(key, n, "%s/pki/%s.key", home, ident)) >= (int)n ||
        (o->ca ? snprintf(ca, n, "%s", o->ca) : snprintf(ca, n, "%s/pki/ca.crt", home)) >= (int)n) {
        fprintf(stderr, "airlockctl: %s: certificate path too long\n", o->what);
        return CTL_EXIT_FAIL;
    }
    return 0;
}

/* ---------- channel ---------- */

int ctl_rpc_open(const struct ctl_rpc_opts *o, const char *expect_peer, struct ctl_rpc **out)
{
    char cert[PATH_LEN], key[PATH_LEN], ca[PATH_LEN];
    struct ctl_rpc *r;
    int rc;

    *out = NULL;
    /* our own messages say what failed; the library's info lines only repeat it */
    const char *lv = getenv("AIRLOCK_LOG_LEVEL");
    if (!lv || al_log_set_level_name(lv) < 0)
        (void)al_log_set_level_name("warn");
    rc = ctl_rpc_identity_paths(o, cert, key, ca, sizeof(cert));
    if (rc)
        return rc;
    r = calloc(1, sizeof(*r));
    if (!r || !(r->loop = ev_loop_new(EVFLAG_AUTO))) {
        free(r);
        fprintf(stderr, "airlockctl: %s: out of memory\n", o->what);
        return CTL_EXIT_FAIL;
    }
    r->o = *o;
    if (!r->o.addr) {
        const char *env = getenv(o->addr_env ? o->addr_env : CTL_CREDSTORE_ADDR_ENV);
        r->o.addr = env && *env ? env
                                : (o->addr_default ? o->addr_default : CTL_CREDSTORE_ADDR_DEFAULT);
    }
    struct al_tls_opts to = {.cert_file = o->server_auth_only ? NULL : cert,
                             .key_file = o->server_auth_only ? NULL : key,
                             .ca_file = ca};
    rc = al_tls_new(&to, &r->tls);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: cannot load TLS files (%s, %s, %s): %s\n", o->what, cert,
                key, ca, al_strerror(rc));
        ctl_rpc_close(r);
        return CTL_EXIT_FAIL;
    }
    struct al_grpc_channel_opts co = {
        .target = r->o.addr, .tls = r->tls, .expect_peer = expect_peer};
    rc = al_grpc_channel_new(r->loop, &co, &r->ch);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", o->what, r->o.addr, al_strerror(rc));
        ctl_rpc_close(r);
        return rc == AL_ERR_INVAL ? CTL_EXIT_USAGE : CTL_EXIT_FAIL;
    }
    *out = r;
    return 0;
}

void ctl_rpc_close(struct ctl_rpc *r)
{
    if (!r)
        return;
    if (r->ch) {
        al_grpc_channel_free(r->ch);
        r->ch = NULL;
        ev_run(r->loop, 0); /* let the closed connection be reaped */
    }
    al_tls_free(r->tls);
    if (r->loop)
        ev_loop_destroy(r->loop);
    if (r->bearer) {
        OPENSSL_cleanse(r->bearer, r->bearer_len);
        free(r->bearer);
    }
    free(r);
}

/* The call's metadata: the bearer key if set. Returns the count. */
static size_t call_md(const struct ctl_rpc *r, struct al_grpc_md *md)
{
    if (!r->bearer)
        return 0;
    md->key = "authorization";
    md->value = r->bearer;
    md->len = r->bearer_len;
    return 1;
}

const char *ctl_rpc_last_error(const struct ctl_rpc *r)
{
    return r->last_err;
}

struct ev_loop *ctl_rpc_loop(struct ctl_rpc *r)
{
    return r->loop;
}

void ctl_rpc_fire(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *desc)
{
    static const struct al_grpc_ccall_cbs cbs = {NULL, NULL};
    struct al_grpc_md md[1];
    size_t nmd = call_md(r, md);

    (void)al_grpc_channel_call(r->ch, path, req, desc, md, nmd, r->o.timeout_s, &cbs, NULL, NULL);
}

int ctl_rpc_set_bearer(struct ctl_rpc *r, const char *key, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)key[i] < 0x21 || (unsigned char)key[i] > 0x7e) {
            fprintf(stderr, "airlockctl: %s: the API key holds bytes not allowed in a header\n",
                    r->o.what);
            return CTL_EXIT_FAIL;
        }
    }
    if (r->bearer) {
        OPENSSL_cleanse(r->bearer, r->bearer_len);
        free(r->bearer);
    }
    r->bearer_len = len + 7;
    r->bearer = malloc(r->bearer_len + 1);
    if (!r->bearer) {
        fprintf(stderr, "airlockctl: %s: out of memory\n", r->o.what);
        return CTL_EXIT_FAIL;
    }
    memcpy(r->bearer, "Bearer ", 7);
    memcpy(r->bearer + 7, key, len);
    r->bearer[r->bearer_len] = '\0';
    return 0;
}


void ctl_rpc_quiet(struct ctl_rpc *r, int quiet)
{
    r->quiet = quiet;
}

/* ---------- calls ---------- */

struct call_state {
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *resp;
    int status, finished, reason, nomem;
    char msg[512], field[128];
};

static void on_message(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct call_state *st = user;
    size_t len;
    uint8_t *buf;

    (void)cc;
    if (st->resp)
        return;
    /* copy past the callback by re-packing; the buffer may hold a secret */
    len = protobuf_c_message_get_packed_size(m);
    buf = malloc(len ? len : 1);
    if (!buf) {
        st->nomem = 1;
        return;
    }
    protobuf_c_message_pack(m, buf);
    st->resp = protobuf_c_message_unpack(st->desc, NULL, len, buf);
    OPENSSL_cleanse(buf, len);
    free(buf);
    if (!st->resp)
        st->nomem = 1;
}

static void on_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct call_state *st = user;
    size_t len = 0;
    const char *bin = al_grpc_ccall_metadata(cc, "airlock-error-bin", &len);

    st->status = status;
    st->finished = 1;
    snprintf(st->msg, sizeof(st->msg), "%s", message);
    if (bin && len) {
        Airlock__V1__ErrorDetail *d =
            airlock__v1__error_detail__unpack(NULL, len, (const uint8_t *)bin);
        if (d) {
            st->reason = d->reason;
            snprintf(st->field, sizeof(st->field), "%s", d->field ? d->field : "");
            if (!st->msg[0] && d->message)
                snprintf(st->msg, sizeof(st->msg), "%s", d->message);
            airlock__v1__error_detail__free_unpacked(d, NULL);
        }
    }
}

/* Formats the failure into r->last_err and prints it unless r is quiet. */
static void report(struct ctl_rpc *r, const struct call_state *st)
{
    char extra[256] = "";

    if (st->reason || st->field[0])
        snprintf(extra, sizeof(extra), " [reason %s%s%s]",
                 ctl_enum_name(&airlock__v1__error_reason__descriptor, st->reason),
                 st->field[0] ? ", field " : "", st->field);
    snprintf(r->last_err, sizeof(r->last_err), "%s: %s%s", al_grpc_status_name(st->status),
             st->msg[0] ? st->msg : "(no message)", extra);
    if (!r->quiet)
        fprintf(stderr, "airlockctl: %s: %s\n", r->o.what, r->last_err);
}

int ctl_rpc_call(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, int *status,
                 int *reason)
{
    static const struct al_grpc_ccall_cbs cbs = {on_message, on_done};
    struct call_state st = {.desc = desc};
    int rc;

    struct al_grpc_md md[1];
    size_t nmd = call_md(r, md);

    *resp = NULL;
    rc = al_grpc_channel_call(r->ch, path, req, desc, md, nmd, r->o.timeout_s, &cbs, &st, NULL);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", r->o.what, r->o.addr, al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    while (!st.finished)
        ev_run(r->loop, EVRUN_ONCE);
    if (st.status == AL_GRPC_OK && (st.nomem || !st.resp)) {
        st.status = AL_GRPC_INTERNAL;
        snprintf(st.msg, sizeof(st.msg), "%s",
                 st.nomem ? "out of memory reading the response"
                          : "server sent no response message");
    }
    if (status)
        *status = st.status;
    if (reason)
        *reason = st.reason;
    if (st.status == AL_GRPC_OK) {
        *resp = st.resp;
        return 0;
    }
    ctl_rpc_free_resp(st.resp);
    report(r, &st);
    return CTL_EXIT_FAIL;
}

struct stream_state {
    struct call_state st;
    int (*on_msg)(const ProtobufCMessage *m, void *user);
    void *user;
    int stop;
};

static void on_stream_message(struct al_grpc_ccall *cc, const ProtobufCMessage *m, void *user)
{
    struct stream_state *ss = user;

    (void)cc;
    if (!ss->stop && ss->on_msg(m, ss->user))
        ss->stop = 1;
}

static void on_stream_done(struct al_grpc_ccall *cc, int status, const char *message, void *user)
{
    struct stream_state *ss = user;

    on_done(cc, status, message, &ss->st);
}

int ctl_rpc_stream(struct ctl_rpc *r, const char *path, const ProtobufCMessage *req,
                   const ProtobufCMessageDescriptor *desc, double timeout_s,
                   int (*on_msg)(const ProtobufCMessage *m, void *user), void *user, int *status,
                   int *reason)
{
    static const struct al_grpc_ccall_cbs cbs = {on_stream_message, on_stream_done};
    struct stream_state ss = {.st = {.desc = desc}, .on_msg = on_msg, .user = user};
    struct al_grpc_ccall *cc = NULL;
    struct al_grpc_md md[1];
    size_t nmd = call_md(r, md);
    int rc;

    rc = al_grpc_channel_call(r->ch, path, req, desc, md, nmd, timeout_s, &cbs, &ss, &cc);
    if (rc < 0) {
        fprintf(stderr, "airlockctl: %s: %s: %s\n", r->o.what, r->o.addr, al_strerror(rc));
        return CTL_EXIT_FAIL;
    }
    while (!ss.st.finished && !ss.stop)
        ev_run(r->loop, EVRUN_ONCE);
    if (ss.stop && !ss.st.finished) {
        al_grpc_ccall_cancel(cc); /* no callback runs after this */
        ss.st.status = AL_GRPC_OK;
    }
    if (status)
        *status = ss.st.status;
    if (reason)
        *reason = ss.st.reason;
    if (ss.st.status == AL_GRPC_OK)
        return 0;
    report(r, &ss.st);
    return CTL_EXIT_FAIL;
}

/* Cleanses every bytes field of m, recursively. */
static void cleanse_bytes(ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;

    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m + f->offset;
        size_t n = 1;

        if (f->type != PROTOBUF_C_TYPE_BYTES && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(size_t *)((char *)m + f->quantifier_offset);
            base = *(char **)base;
        }
        for (size_t k = 0; base && k < n; k++) {
            if (f->type == PROTOBUF_C_TYPE_BYTES) {
                ProtobufCBinaryData *b = (ProtobufCBinaryData *)base + k;
                if (b->data)
                    OPENSSL_cleanse(b->data, b->len);
            } else {
                ProtobufCMessage *sub = f->label == PROTOBUF_C_LABEL_REPEATED
                                            ? ((ProtobufCMessage **)base)[k]
                                            : *(ProtobufCMessage **)base;
                if (sub)
                    cleanse_bytes(sub);
            }
        }
    }
}

void ctl_rpc_free_resp(ProtobufCMessage *m)
{
    if (!m)
        return;
    cleanse_bytes(m);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---------- formatting ---------- */

const char *ctl_enum_name(const ProtobufCEnumDescriptor *d, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(d, v);
    return ev ? ev->name : "?";
}

const char *ctl_fmt_time(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (ms <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(buf, n, "-");
        return buf;
    }
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
    return buf;
}

const char *ctl_fmt_dur(int64_t ms, char *buf, size_t n)
{
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    size_t w = 0;

    if (ms <= 0) {
        snprintf(buf, n, ms < 0 ? "-" : "0s");
        return buf;
    }
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && ms > 0 && w < n; i++) {
        if (ms < units[i].ms)
            continue;
        int k = snprintf(buf + w, n - w, "%lld%s", (long long)(ms / units[i].ms), units[i].u);
        if (k < 0)
            break;
        w += (size_t)k;
        ms %= units[i].ms;
    }
    return buf;
}

int ctl_parse_dur(const char *s, int64_t *ms)
{
    static const struct {
        const char *u;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    int64_t total = 0;

    if (!s || !*s)
        return -1;
    if (strcmp(s, "0") == 0) {
        *ms = 0;
        return 0;
    }
    while (*s) {
        int64_t v = 0;
        size_t i, ul;
        if (*s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (v > (INT64_MAX - 9) / 10)
                return -1;
            v = v * 10 + (*s - '0');
        }
        for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            ul = strlen(units[i].u);
            /* "m" must not swallow the "m" of "ms" */
            if (strncmp(s, units[i].u, ul) == 0 && !(ul == 1 && s[0] == 'm' && s[1] == 's'))
                break;
        }
        if (i == sizeof(units) / sizeof(units[0]))
            return -1;
        if (v > (INT64_MAX - total) / units[i].ms)
            return -1;
        total += v * units[i].ms;
        s += ul;
    }
    *ms = total;
    return 0;
}

int ctl_parse_i64(const char *s, int64_t *v)
{
    char *end;
    long long x;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    x = strtoll(s, &end, 10);
    if (errno || *end)
        return -1;
    *v = x;
    return 0;
}

void ctl_hex(const uint8_t *p, size_t len, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hx[p[i] >> 4];
        out[2 * i + 1] = hx[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static json_t *to_json(const ProtobufCMessage *m);

/* One element of field f at p as JSON. */
static json_t *scalar_json(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_integer((json_int_t) * (const uint64_t *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_ENUM:
        return json_string(ctl_enum_name(f->descriptor, *(const int *)p));
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return json_string(s ? s : "");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *hex = malloc(2 * b->len + 1);
        json_t *j;
        if (!hex)
            return NULL;
        ctl_hex(b->data, b->len, hex);
        j = json_string(hex);
        free(hex);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? to_json(sub) : json_null();
    }
    }
    return json_null();
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

static json_t *to_json(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *o = json_object();

    for (unsigned i = 0; o && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m + f->offset;
        json_t *v;

        /* a oneof member is printed only when it is the one set */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            const char *arr = *(char *const *)base;
            v = json_array();
            for (size_t k = 0; v && k < n; k++)
                json_array_append_new(v, scalar_json(f, arr + k * elem_size(f->type)));
        } else {
            v = scalar_json(f, base);
        }
        if (!v || json_object_set_new(o, f->name, v) < 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int ctl_print_json(const ProtobufCMessage *m, int pretty)
{
    json_t *j = to_json(m);
    char *s =
        j ? json_dumps(j, (pretty ? JSON_INDENT(2) : JSON_COMPACT) | JSON_PRESERVE_ORDER) : NULL;

    json_decref(j);
    if (!s) {
        fprintf(stderr, "airlockctl: cannot format JSON\n");
        return CTL_EXIT_FAIL;
    }
    puts(s);
    free(s);
    return 0;
}
