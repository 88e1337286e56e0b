/*
 * airlockctl audit: read and check credstore's audit chain through
 * CredentialAdmin.QueryAudit and VerifyAudit.
 *
 *   audit tail [-n N] [--follow] [filters]   the last N matching records, then
 *                                             (--follow) new ones as they land
 *   audit verify [--from N] [--to M]          recompute the hash chain
 *
 * Every QueryAudit is itself audited, so a tail's own query records are
 * hidden by default (else --follow would print one per poll).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "airlock/v1/credstore.pb-c.h"
#include "al_err.h"
#include "al_pki.h"
#include "ctl.h"
#include "ctlrpc.h"

#define ADMIN_SVC "/airlock.v1.CredentialAdmin/"
#define ACT(x)    AIRLOCK__V1__AUDIT_ACTION__AUDIT_ACTION_##x

/* ---------- enum names: "AUDIT_ACTION_QUERY_AUDIT" <-> "query-audit" ---------- */

static const char *short_name(const ProtobufCEnumDescriptor *d, const char *prefix, int v,
                              char *buf, size_t n)
{
    const char *full = ctl_enum_name(d, v);
    size_t pl = strlen(prefix), i = 0;

    if (strncmp(full, prefix, pl) == 0)
        full += pl;
    for (; full[i] && i + 1 < n; i++)
        buf[i] = full[i] == '_' ? '-' : (char)(full[i] | 0x20);
    buf[i] = '\0';
    return buf;
}

static int parse_short(const ProtobufCEnumDescriptor *d, const char *prefix, const char *s, int *v)
{
    char buf[64];

    for (unsigned i = 1; i < d->n_values; i++) {
        if (strcmp(short_name(d, prefix, d->values[i].value, buf, sizeof(buf)), s) == 0) {
            *v = d->values[i].value;
            return 0;
        }
    }
    return -1;
}

static void list_short(const ProtobufCEnumDescriptor *d, const char *prefix)
{
    char buf[64];

    for (unsigned i = 1; i < d->n_values; i++)
        fprintf(stderr, "%s%s", i > 1 ? ", " : "",
                short_name(d, prefix, d->values[i].value, buf, sizeof(buf)));
    fputc('\n', stderr);
}

/* ---------- printing records ---------- */

/* Prints " key=value", quoting values with spaces or quotes; skips empty ones. */
static void kv(const char *k, const char *v)
{
    if (!v || !*v)
        return;
    if (strpbrk(v, " \"\t=")) {
        printf(" %s=\"", k);
        for (; *v; v++)
            printf(*v == '"' || *v == '\\' ? "\\%c" : "%c", *v);
        putchar('"');
    } else {
        printf(" %s=%s", k, v);
    }
}

static void print_record(const Airlock__V1__AuditRecord *a, int json)
{
    char t[32], act[48], dec[16], num[24];

    if (json) {
        ctl_print_json(&a->base, 0);
        return;
    }
    printf("seq=%lld time=%s action=%s decision=%s", (long long)a->seq,
           ctl_fmt_time(a->time_ms, t, sizeof(t)),
           short_name(&airlock__v1__audit_action__descriptor, "AUDIT_ACTION_", a->action, act,
                      sizeof(act)),
           short_name(&airlock__v1__audit_decision__descriptor, "AUDIT_DECISION_", a->decision, dec,
                      sizeof(dec)));
    kv("caller", a->caller);
    kv("credential", a->credential);
    if (a->version) {
        snprintf(num, sizeof(num), "%d", a->version);
        kv("version", num);
    }
    kv("principal", a->principal);
    kv("issuer", a->issuer);
    kv("scope", a->scope);
    kv("dest", a->destination);
    kv("grant", a->grant_id);
    kv("subject", a->subject);
    kv("method", a->method);
    kv("path", a->path);
    if (a->status) {
        snprintf(num, sizeof(num), "%d", a->status);
        kv("status", num);
    }
    kv("request_id", a->request_id);
    kv("tool", a->tool);
    if (a->duration_us) {
        snprintf(num, sizeof(num), "%.3f", (double)a->duration_us / 1000.0);
        kv("ms", num);
    }
    kv("batch", a->batch_id);
    kv("reason", a->reason);
    putchar('\n');
}

/* ---------- tail ---------- */

enum {
    OPT_FOLLOW = 'f',
    OPT_N = 'n',
    OPT_CREDENTIAL = CTL_OPT_FIRST_FREE,
    OPT_PRINCIPAL,
    OPT_CALLER,
    OPT_GRANT,
    OPT_ACTION,
    OPT_DECISION,
    OPT_SINCE,
    OPT_INTERVAL,
    OPT_SHOW_OWN,
    OPT_JSON,
    OPT_FROM,
    OPT_TO
};

static const char tail_help[] =
    "usage: airlockctl audit tail [-n N] [--follow] [--since DURATION] [--credential C]\n"
    "                             [--principal P] [--caller SPIFFE] [--grant ID]\n"
    "                             [--action A] [--decision allow|deny] [--json]\n"
    "\n"
    "Prints the last N (default 20; 0 = all) audit records that match every filter,\n"
    "oldest first, one line each (key=value; --json: one JSON object per line).\n"
    "  -f, --follow         then keep polling for new records (every --interval,\n"
    "                       default 1s) until interrupted\n"
    "  --since DURATION     only records of the last DURATION (e.g. 10m, 2h)\n"
    "  --credential C, --principal P, --caller SPIFFE, --grant ID\n"
    "                       exact-match filters\n"
    "  --action A           resolve, use, put, rotate, delete, version-destroyed, list,\n"
    "                       describe, query-audit, verify-audit, append-audit\n"
    "  --decision D         allow or deny\n"
    "  --show-own-queries   also print the QueryAudit records this identity's own\n"
    "                       queries add (hidden by default: every query is audited)\n"
    "Values are never in the audit chain, so nothing here can print one.\n";

struct tail {
    struct ctl_rpc *r;
    Airlock__V1__QueryAuditRequest req;
    Airlock__V1__PageRequest page;
    char own[256]; /* SPIFFE id of our identity, "" if unknown */
    int show_own, json;
    /* the collected window(s): responses own the records */
    ProtobufCMessage **resps;
    size_t nresps;
    const Airlock__V1__AuditRecord **recs;
    size_t nrecs, caprecs;
};

static int hidden(const struct tail *t, const Airlock__V1__AuditRecord *a)
{
    return !t->show_own && t->own[0] && a->action == ACT(QUERY_AUDIT) &&
           strcmp(a->caller, t->own) == 0;
}

/* Our SPIFFE id, read from the certificate we present. */
static void own_id(const struct ctl_rpc_opts *o, char *buf, size_t n)
{
    char cert[1024], key[1024], ca[1024];
    X509 *x = NULL;

    buf[0] = '\0';
    if (ctl_rpc_identity_paths(o, cert, key, ca, sizeof(cert)) == 0 &&
        al_pki_load_cert(cert, &x) == 0) {
        if (al_pki_spiffe_id(x, buf, n) < 0)
            buf[0] = '\0';
        X509_free(x);
    }
}

static int keep_resp(struct tail *t, ProtobufCMessage *m)
{
    ProtobufCMessage **nr = realloc(t->resps, (t->nresps + 1) * sizeof(*nr));
    if (!nr)
        return -1;
    t->resps = nr;
    t->resps[t->nresps++] = m;
    return 0;
}

/* Inserts a[0..n) (ascending) at position at of t->recs. */
static int insert_recs(struct tail *t, size_t at, const Airlock__V1__AuditRecord **a, size_t n)
{
    if (t->nrecs + n > t->caprecs) {
        size_t cap = (t->nrecs + n) * 2;
        const Airlock__V1__AuditRecord **nr = realloc(t->recs, cap * sizeof(*nr));
        if (!nr)
            return -1;
        t->recs = nr;
        t->caprecs = cap;
    }
    memmove(t->recs + at + n, t->recs + at, (t->nrecs - at) * sizeof(*t->recs));
    memcpy(t->recs + at, a, n * sizeof(*a));
    t->nrecs += n;
    return 0;
}

/*
 * Pages through matching records with lo < seq <= hi and inserts the visible
 * ones at the front of t->recs (windows are read newest first). *head gets
 * the chain head. Returns 0 or CTL_EXIT_FAIL.
 */
static int fetch_window(struct tail *t, int64_t lo, int64_t hi, int64_t *head)
{
    const Airlock__V1__AuditRecord **win = NULL;
    size_t nwin = 0, cap = 0;
    char token[1024] = "";
    int rc = 0, stop = 0, oom = 0;

    t->req.after_seq = lo;
    do {
        ProtobufCMessage *m = NULL;
        t->page.page_token = token;
        rc = ctl_rpc_call(t->r, ADMIN_SVC "QueryAudit", &t->req.base,
                          &airlock__v1__query_audit_response__descriptor, &m, NULL, NULL);
        if (rc)
            break;
        const Airlock__V1__QueryAuditResponse *qr = (const Airlock__V1__QueryAuditResponse *)m;
        *head = qr->head_seq;
        if (keep_resp(t, m) < 0) {
            ctl_rpc_free_resp(m);
            oom = 1;
            break;
        }
        if (nwin + qr->n_records > cap) {
            const Airlock__V1__AuditRecord **nw;
            cap = (nwin + qr->n_records) * 2 + 16;
            if (!(nw = realloc(win, cap * sizeof(*nw)))) {
                oom = 1;
                break;
            }
            win = nw;
        }
        for (size_t i = 0; i < qr->n_records && !stop; i++) {
            if (qr->records[i]->seq > hi)
                stop = 1;
            else if (!hidden(t, qr->records[i]))
                win[nwin++] = qr->records[i];
        }
        snprintf(token, sizeof(token), "%s",
                 qr->page && qr->page->next_page_token ? qr->page->next_page_token : "");
    } while (!stop && token[0]);
    if (rc == 0 && nwin && insert_recs(t, 0, win, nwin) < 0)
        oom = 1;
    if (oom) {
        fprintf(stderr, "airlockctl: audit tail: out of memory\n");
        rc = CTL_EXIT_FAIL;
    }
    free(win);
    return rc;
}

/* Collects the last n matching records (n == 0: all); *hi gets the head they end at. */
static int collect_last(struct tail *t, int64_t n, int64_t *hi)
{
    int64_t head = 0, lo, w;
    int rc;

    /* learn the head with a one-record query */
    t->page.page_size = 1;
    rc = fetch_window(t, INT64_MAX - 1, INT64_MAX, &head);
    t->page.page_size = 500;
    if (rc)
        return rc;
    *hi = head;
    w = n ? (t->req.credential[0] || t->req.principal[0] || t->req.action || t->req.caller[0] ||
                     t->req.grant_id[0] || t->req.decision || t->req.from_ms
                 ? 2000
                 : n + 16)
          : head;
    for (int64_t top = head; rc == 0 && top > 0 && (n == 0 || (int64_t)t->nrecs < n); top = lo) {
        lo = top > w ? top - w : 0;
        rc = fetch_window(t, lo, top, &head);
        if (w < INT64_MAX / 4)
            w *= 4;
    }
    return rc;
}

static void free_tail(struct tail *t)
{
    for (size_t i = 0; i < t->nresps; i++)
        ctl_rpc_free_resp(t->resps[i]);
    free(t->resps);
    free(t->recs);
    t->resps = NULL;
    t->recs = NULL;
    t->nresps = t->nrecs = t->caprecs = 0;
}

/* Polls for records after *last every interval_ms; returns only on error. */
static int follow(struct tail *t, int64_t *last, int64_t interval_ms)
{
    struct timespec ts = {.tv_sec = interval_ms / 1000, .tv_nsec = (interval_ms % 1000) * 1000000};
    int64_t head;
    int rc;

    for (;;) {
        nanosleep(&ts, NULL);
        free_tail(t);
        rc = fetch_window(t, *last, INT64_MAX, &head);
        if (rc)
            return rc;
        for (size_t i = 0; i < t->nrecs; i++)
            print_record(t->recs[i], t->json);
        for (size_t i = 0; i < t->nresps; i++) {
            const Airlock__V1__QueryAuditResponse *qr =
                (const Airlock__V1__QueryAuditResponse *)t->resps[i];
            if (qr->n_records && qr->records[qr->n_records - 1]->seq > *last)
                *last = qr->records[qr->n_records - 1]->seq;
        }
        fflush(stdout);
    }
}

/* Applies a tail filter flag. Returns 1 consumed, 0 not one, or an exit code. */
static int tail_opt(struct tail *t, int c, const char *arg, int64_t *n, int64_t *interval)
{
    int64_t ms;
    int v;

    switch (c) {
    case OPT_N:
        if (ctl_parse_i64(arg, n) < 0)
            return ctl_usage_error("audit tail", "-n needs a number");
        return 1;
    case OPT_CREDENTIAL:
        t->req.credential = (char *)arg;
        return 1;
    case OPT_PRINCIPAL:
        t->req.principal = (char *)arg;
        return 1;
    case OPT_CALLER:
        t->req.caller = (char *)arg;
        return 1;
    case OPT_GRANT:
        t->req.grant_id = (char *)arg;
        return 1;
    case OPT_ACTION:
        if (parse_short(&airlock__v1__audit_action__descriptor, "AUDIT_ACTION_", arg, &v) < 0) {
            fprintf(stderr, "airlockctl: audit tail: --action is one of: ");
            list_short(&airlock__v1__audit_action__descriptor, "AUDIT_ACTION_");
            return CTL_EXIT_USAGE;
        }
        t->req.action = v;
        t->show_own |= v == ACT(QUERY_AUDIT);
        return 1;
    case OPT_DECISION:
        if (parse_short(&airlock__v1__audit_decision__descriptor, "AUDIT_DECISION_", arg, &v) < 0)
            return ctl_usage_error("audit tail", "--decision is allow or deny");
        t->req.decision = v;
        return 1;
    case OPT_SINCE:
        if (ctl_parse_dur(arg, &ms) < 0)
            return ctl_usage_error("audit tail", "--since: bad duration '%s'", arg);
        t->req.from_ms = (int64_t)time(NULL) * 1000 - ms;
        return 1;
    case OPT_INTERVAL:
        if (ctl_parse_dur(arg, interval) < 0 || *interval < 100)
            return ctl_usage_error("audit tail", "--interval needs a duration >= 100ms");
        return 1;
    case OPT_SHOW_OWN:
        t->show_own = 1;
        return 1;
    case OPT_JSON:
        t->json = 1;
        return 1;
    default:
        return 0;
    }
}

static int audit_tail(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"follow", no_argument, NULL, OPT_FOLLOW},
                                       {"lines", required_argument, NULL, OPT_N},
                                       {"credential", required_argument, NULL, OPT_CREDENTIAL},
                                       {"principal", required_argument, NULL, OPT_PRINCIPAL},
                                       {"caller", required_argument, NULL, OPT_CALLER},
                                       {"grant", required_argument, NULL, OPT_GRANT},
                                       {"action", required_argument, NULL, OPT_ACTION},
                                       {"decision", required_argument, NULL, OPT_DECISION},
                                       {"since", required_argument, NULL, OPT_SINCE},
                                       {"interval", required_argument, NULL, OPT_INTERVAL},
                                       {"show-own-queries", no_argument, NULL, OPT_SHOW_OWN},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    struct tail t = {.req = AIRLOCK__V1__QUERY_AUDIT_REQUEST__INIT,
                     .page = AIRLOCK__V1__PAGE_REQUEST__INIT};
    struct ctl_rpc_opts o;
    int64_t n = 20, interval = 1000, hi = 0;
    int c, rc, follow_on = 0;

    ctl_rpc_opts_init(&o, "audit tail", "admin/admin", 10);
    t.req.page = &t.page;
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":hfn:", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(tail_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if (c == OPT_FOLLOW) {
            follow_on = 1;
            continue;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) == 0)
            rc = tail_opt(&t, c, optarg, &n, &interval);
        if (rc != 1)
            return rc ? rc : CTL_EXIT_USAGE;
    }
    if (argc > optind)
        return ctl_usage_error(o.what, "unexpected argument '%s'", argv[optind]);
    own_id(&o, t.own, sizeof(t.own));
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &t.r)) != 0)
        return rc;
    rc = collect_last(&t, n, &hi);
    for (size_t i = n && (int64_t)t.nrecs > n ? t.nrecs - (size_t)n : 0; rc == 0 && i < t.nrecs;
         i++)
        print_record(t.recs[i], t.json);
    fflush(stdout);
    if (rc == 0 && follow_on)
        rc = follow(&t, &hi, interval);
    free_tail(&t);
    ctl_rpc_close(t.r);
    return rc;
}

/* ---------- verify ---------- */

static const char verify_help[] =
    "usage: airlockctl audit verify [--from N] [--to M] [--json]\n"
    "\n"
    "Asks the credstore to recompute the audit hash chain from seq N (default 1)\n"
    "to M (default the head), including the link into N and, when the range ends\n"
    "at the head, the MACed head and the head file. Prints the head seq and hash\n"
    "(keep them elsewhere to detect a later truncation). Exit status 0 intact,\n"
    "1 not intact (first bad seq and the problem printed) or the call failed.\n";

static int audit_verify(int argc, char **argv)
{
    static const struct option lo[] = {CTL_RPC_LONGOPTS,
                                       {"from", required_argument, NULL, OPT_FROM},
                                       {"to", required_argument, NULL, OPT_TO},
                                       {"json", no_argument, NULL, OPT_JSON},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    Airlock__V1__VerifyAuditRequest req = AIRLOCK__V1__VERIFY_AUDIT_REQUEST__INIT;
    struct ctl_rpc_opts o;
    struct ctl_rpc *r = NULL;
    ProtobufCMessage *m = NULL;
    char hex[2 * 32 + 1] = "";
    int c, rc, json = 0;

    ctl_rpc_opts_init(&o, "audit verify", "admin/admin", 300);
    optind = 0;
    while ((c = ctl_getopt(o.what, argc, argv, ":h", lo)) != -1) {
        if (c == '?')
            return CTL_EXIT_USAGE;
        if (c == 'h') {
            fputs(verify_help, stdout);
            ctl_rpc_help(&o);
            return CTL_EXIT_OK;
        }
        if ((rc = ctl_rpc_opt(&o, c, optarg)) != 0) {
            if (rc != 1)
                return rc;
        } else if (c == OPT_FROM || c == OPT_TO) {
            if (ctl_parse_i64(optarg, c == OPT_FROM ? &req.from_seq : &req.to_seq) < 0)
                return ctl_usage_error(o.what, "%s needs a seq number", argv[optind - 1]);
        } else if (c == OPT_JSON) {
            json = 1;
        }
    }
    if (argc > optind)
        return ctl_usage_error(o.what, "unexpected argument '%s'", argv[optind]);
    if (req.to_seq && req.from_seq > req.to_seq)
        return ctl_usage_error(o.what, "--from is after --to");
    if ((rc = ctl_rpc_open(&o, CTL_CREDSTORE_PEER, &r)) != 0)
        return rc;
    rc = ctl_rpc_call(r, ADMIN_SVC "VerifyAudit", &req.base,
                      &airlock__v1__verify_audit_response__descriptor, &m, NULL, NULL);
    ctl_rpc_close(r);
    if (rc)
        return rc;
    const Airlock__V1__VerifyAuditResponse *v = (const Airlock__V1__VerifyAuditResponse *)m;
    if (v->head_hash.len == 32)
        ctl_hex(v->head_hash.data, 32, hex);
    if (json)
        ctl_print_json(m, 1);
    else if (v->intact)
        printf("audit chain intact: %lld record(s) checked\nhead seq:  %lld\nhead hash: %s\n",
               (long long)v->records_checked, (long long)v->head_seq, hex[0] ? hex : "-");
    else
        printf("audit chain NOT intact: first bad seq %lld: %s\n"
               "(%lld record(s) checked; head seq %lld)\n",
               (long long)v->first_bad_seq, v->problem, (long long)v->records_checked,
               (long long)v->head_seq);
    rc = v->intact ? CTL_EXIT_OK : CTL_EXIT_FAIL;
    ctl_rpc_free_resp(m);
    return rc;
}

int ctl_audit(int argc, char **argv)
{
    static const struct ctl_sub subs[] = {
        {"tail", "[-n N] [--follow] [--credential C] [--principal P] [--since D]",
         "print the last audit records, optionally following new ones", audit_tail},
        {"verify", "[--from N] [--to M]", "check the audit hash chain (exit 1 if broken)",
         audit_verify},
    };

    return ctl_dispatch("audit", subs, sizeof subs / sizeof subs[0], argc, argv);
}
