/* Unit tests for the credential scrubber (services/relay/scrub.c): every
 * encoded form of several canary values, each at every chunk split point;
 * base64 at every alignment inside longer base64 text; overlapping and
 * adjacent matches; random chunking against one-shot scrubbing; false
 * positives; length limits; output caps.
 *
 * The expected forms are produced here independently of scrub.c: jansson for
 * JSON escaping, OpenSSL for base64, printf for hex, a small encoder for
 * percent-encoding, and literal strings where a browser's encoder is meant. */
#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "al_err.h"
#include "rlbuf.h"
#include "scrub.h"

#define MARK     RL_SCRUB_MARK
#define MARK_LEN (sizeof(MARK) - 1)

struct canary {
    const char *name;
    const uint8_t *v;
    size_t n;
};

/* plain token */
static const uint8_t C_TOKEN[] = "sk-live-7f3Kq9Zp2Xw8Lm4NvB6t";
/* needs JSON and URL escaping: space, '/', '"', '\\', '+', '~', '*', '!' */
static const uint8_t C_PUNCT[] = "pa ss/w+rd\"q\\x~y*z!";
/* bytes that are not text: 0x00, 0xff, control characters, DEL */
static const uint8_t C_BIN[] = {0x00, 0xff, '/', '"', '\\', ' ', '+',
                                0x01, 0x7f, 'A', 'b', 0x1f, 0x80};
/* valid UTF-8 beyond ASCII (a 2-, a 3- and a 4-byte sequence) */
static const uint8_t C_UTF8[] = "p\xc3\xa4ss-\xe2\x82\xac-\xf0\x9f\x98\x80-w0rd";

static const struct canary CANARIES[] = {
    {"token", C_TOKEN, sizeof(C_TOKEN) - 1},
    {"punct", C_PUNCT, sizeof(C_PUNCT) - 1},
    {"binary", C_BIN, sizeof(C_BIN)},
    {"utf8", C_UTF8, sizeof(C_UTF8) - 1},
};
#define N_CANARIES (sizeof(CANARIES) / sizeof(CANARIES[0]))

/* ---- helpers ---- */

/* An assertion whose failure text says which case failed (CUnit copies it;
 * printing from a test would split CUnit's "Test: ... passed" line). */
__attribute__((format(printf, 3, 4))) static void check(int ok, unsigned line, const char *fmt, ...)
{
    char msg[256] = "";
    va_list ap;

    if (!ok) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    }
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, line, msg, __FILE__, "", CU_FALSE);
}
#define CHECK(ok, ...) check((ok), __LINE__, __VA_ARGS__)

static struct rl_scrub *set_of(const uint8_t *v, size_t n)
{
    struct rl_scrub *s = NULL;
    CU_ASSERT_EQUAL_FATAL(rl_scrub_new(&s), 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, v, n), 0);
    return s;
}

static struct rl_scrub *set_of_all(void)
{
    struct rl_scrub *s = NULL;
    CU_ASSERT_EQUAL_FATAL(rl_scrub_new(&s), 0);
    for (size_t i = 0; i < N_CANARIES; i++)
        CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, CANARIES[i].v, CANARIES[i].n), 0);
    return s;
}

/* A growable byte string for building texts. */
struct str {
    uint8_t *p;
    size_t len, cap;
};

static void str_add(struct str *s, const void *d, size_t n)
{
    if (n > SIZE_MAX / 4 || s->len > SIZE_MAX / 4)
        abort(); /* cannot happen; tells the optimizer the sum below cannot wrap */
    if (s->len + n + 1 > s->cap) {
        uint8_t *np;
        s->cap = (s->len + n + 1) * 2;
        np = realloc(s->p, s->cap);
        if (!np)
            abort(); /* out of memory in a test: nothing sensible to report */
        s->p = np;
    }
    if (n)
        memcpy(s->p + s->len, d, n);
    s->len += n;
    s->p[s->len] = 0;
}

static void str_puts(struct str *s, const char *z)
{
    str_add(s, z, strlen(z));
}

static void str_free(struct str *s)
{
    free(s->p);
    memset(s, 0, sizeof(*s));
}

/* One-shot scrub of d into a fresh str; *hits gets the count. */
static struct str scrub_copy(const struct rl_scrub *s, const uint8_t *d, size_t n, long *hits)
{
    struct rl_buf out;
    struct str r = {0};
    long h;

    rl_buf_init(&out, 0);
    h = rl_scrub_copy(s, d, n, &out);
    CU_ASSERT(h >= 0);
    str_add(&r, out.p, out.len);
    rl_buf_cleanup(&out);
    if (hits)
        *hits = h;
    return r;
}

/* Streams d through s in the chunks given by cuts (increasing offsets). */
static struct str scrub_stream(const struct rl_scrub *s, const uint8_t *d, size_t n,
                               const size_t *cuts, size_t ncuts, unsigned long *hits)
{
    struct rl_scrub_stream *st = NULL;
    struct rl_buf out;
    struct str r = {0};
    size_t at = 0;

    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_stream_new(s, &st), 0);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, d + at, to - at, &out), 0);
        CU_ASSERT(rl_scrub_stream_held(st) < (rl_scrub_max_len(s) ? rl_scrub_max_len(s) : 1));
        at = to;
    }
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0);
    if (hits)
        *hits = rl_scrub_stream_hits(st);
    rl_scrub_stream_free(st);
    str_add(&r, out.p, out.len);
    rl_buf_cleanup(&out);
    return r;
}

static int str_eq(const struct str *a, const void *b, size_t n)
{
    return a->len == n && memcmp(a->p, b, n) == 0;
}

/* Does hay contain needle (bytes)? */
static int has(const uint8_t *hay, size_t hn, const uint8_t *needle, size_t nn)
{
    if (nn == 0)
        return 1;
    for (size_t i = 0; i + nn <= hn; i++)
        if (memcmp(hay + i, needle, nn) == 0)
            return 1;
    return 0;
}

/* ---- independent encoders ---- */

static void enc_hex(struct str *o, const uint8_t *v, size_t n, int upper)
{
    char b[3];
    for (size_t i = 0; i < n; i++) {
        snprintf(b, sizeof(b), upper ? "%02X" : "%02x", v[i]);
        str_add(o, b, 2);
    }
}

/* base64 via OpenSSL; url: -_ alphabet; pad: keep '=' */
static void enc_b64(struct str *o, const uint8_t *v, size_t n, int url, int pad)
{
    size_t cap = 4 * ((n + 2) / 3) + 1;
    unsigned char *b = malloc(cap);
    int len;

    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    len = EVP_EncodeBlock(b, v, (int)n);
    for (int i = 0; i < len; i++) {
        if (url && b[i] == '+')
            b[i] = '-';
        if (url && b[i] == '/')
            b[i] = '_';
        if (!pad && b[i] == '=')
            len = i;
    }
    str_add(o, b, (size_t)len);
    free(b);
}

/* %XX for every byte not in raw_set; space as '+' if plus. */
static void enc_pct(struct str *o, const uint8_t *v, size_t n, const char *raw_set, int upper,
                    int plus)
{
    char b[4];
    for (size_t i = 0; i < n; i++) {
        uint8_t c = v[i];
        if (plus && c == ' ') {
            str_add(o, "+", 1);
        } else if (raw_set && c && (isalnum(c) && c < 0x80 ? 1 : strchr(raw_set, c) != NULL)) {
            str_add(o, &c, 1);
        } else {
            snprintf(b, sizeof(b), upper ? "%%%02X" : "%%%02x", c);
            str_add(o, b, 3);
        }
    }
}

/* JSON string contents as jansson writes them (flags: JSON_ESCAPE_SLASH,
 * JSON_ENSURE_ASCII); 0 if jansson refuses the bytes (not UTF-8). */
static int enc_jansson(struct str *o, const uint8_t *v, size_t n, size_t flags)
{
    json_t *j = json_stringn((const char *)v, n);
    char *d;

    if (!j)
        return 0;
    d = json_dumps(j, JSON_ENCODE_ANY | flags);
    json_decref(j);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    str_add(o, d + 1, strlen(d) - 2); /* without the quotes */
    free(d);
    return 1;
}

/* The same with \uXXXX hex digits in lower case (JSON.stringify, Python). */
static void lower_u_escapes(struct str *o)
{
    for (size_t i = 0; i + 5 < o->len; i++) {
        if (o->p[i] == '\\' && o->p[i + 1] == '\\') {
            i++;
            continue;
        }
        if (o->p[i] == '\\' && o->p[i + 1] == 'u')
            for (size_t k = i + 2; k < i + 6; k++)
                o->p[k] = (uint8_t)tolower(o->p[k]);
    }
}

/* ---- the forms of a canary ---- */

#define MAX_FORMS 40

struct forms {
    struct str f[MAX_FORMS];
    const char *what[MAX_FORMS];
    size_t n;
};

static struct str *form_new(struct forms *fs, const char *what)
{
    CU_ASSERT_FATAL(fs->n < MAX_FORMS);
    fs->what[fs->n] = what;
    return &fs->f[fs->n++];
}

static const char *const UNRESERVED = "-._~";
static const char *const URI_COMPONENT = "-._~!'()*"; /* encodeURIComponent */
static const char *const FORM_RAW = "*-._";           /* WHATWG urlencoded */

static void json_forms(struct forms *fs, const uint8_t *v, size_t n)
{
    struct str *f;
    struct str once = {0};

    if (!enc_jansson(&once, v, n, 0))
        return;
    *form_new(fs, "json jansson") = once;
    f = form_new(fs, "json escape slash");
    enc_jansson(f, v, n, JSON_ESCAPE_SLASH);
    f = form_new(fs, "json ensure_ascii");
    enc_jansson(f, v, n, JSON_ENSURE_ASCII);
    f = form_new(fs, "json ensure_ascii lower-case \\u");
    enc_jansson(f, v, n, JSON_ENSURE_ASCII);
    lower_u_escapes(f);
    f = form_new(fs, "json lower-case \\u (JSON.stringify)");
    enc_jansson(f, v, n, 0);
    lower_u_escapes(f);
    f = form_new(fs, "json escaped twice");
    enc_jansson(f, once.p, once.len, 0);
    f = form_new(fs, "json ensure_ascii escaped twice, slash");
    {
        struct str a = {0};
        enc_jansson(&a, v, n, JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH);
        enc_jansson(f, a.p, a.len, JSON_ESCAPE_SLASH);
        str_free(&a);
    }
}

static void all_forms(struct forms *fs, const uint8_t *v, size_t n)
{
    memset(fs, 0, sizeof(*fs));
    str_add(form_new(fs, "raw"), v, n);
    enc_hex(form_new(fs, "hex lower"), v, n, 0);
    enc_hex(form_new(fs, "hex upper"), v, n, 1);
    enc_b64(form_new(fs, "base64 padded"), v, n, 0, 1);
    enc_b64(form_new(fs, "base64 unpadded"), v, n, 0, 0);
    enc_b64(form_new(fs, "base64url unpadded"), v, n, 1, 0);
    enc_b64(form_new(fs, "base64url padded"), v, n, 1, 1);
    enc_pct(form_new(fs, "percent upper"), v, n, UNRESERVED, 1, 0);
    enc_pct(form_new(fs, "percent lower"), v, n, UNRESERVED, 0, 0);
    enc_pct(form_new(fs, "percent space as +"), v, n, UNRESERVED, 1, 1);
    enc_pct(form_new(fs, "percent every byte, upper"), v, n, NULL, 1, 0);
    enc_pct(form_new(fs, "percent every byte, lower"), v, n, NULL, 0, 0);
    enc_pct(form_new(fs, "encodeURIComponent"), v, n, URI_COMPONENT, 1, 0);
    enc_pct(form_new(fs, "form-urlencoded"), v, n, FORM_RAW, 1, 1);
    enc_pct(form_new(fs, "python quote"), v, n, "-._~/", 1, 0);
    json_forms(fs, v, n);
}

static void forms_free(struct forms *fs)
{
    for (size_t i = 0; i < fs->n; i++)
        str_free(&fs->f[i]);
}

/* ---- tests ---- */

static void test_limits(void)
{
    uint8_t big[RL_SCRUB_MAX_VALUE + 1];
    struct rl_scrub *s = NULL;

    memset(big, 'k', sizeof(big));
    CU_ASSERT_EQUAL_FATAL(rl_scrub_new(&s), 0);
    CU_ASSERT_EQUAL(rl_scrub_patterns(s), 0);
    CU_ASSERT_EQUAL(rl_scrub_max_len(s), 0);
    CU_ASSERT_EQUAL(rl_scrub_add(s, big, RL_SCRUB_MIN_VALUE - 1), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_scrub_add(s, big, 0), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_scrub_add(s, NULL, 16), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_scrub_add(NULL, big, 16), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_scrub_add(s, big, RL_SCRUB_MAX_VALUE + 1), AL_ERR_INVAL);
    CU_ASSERT_EQUAL(rl_scrub_patterns(s), 0);
    CU_ASSERT_EQUAL(rl_scrub_add(s, (const uint8_t *)"12345678", RL_SCRUB_MIN_VALUE), 0);
    CU_ASSERT(rl_scrub_patterns(s) > 0);
    CU_ASSERT(rl_scrub_max_len(s) >= 3 * RL_SCRUB_MIN_VALUE); /* %XX for every byte */
    big[100] = 'x';
    CU_ASSERT_EQUAL(rl_scrub_add(s, big, RL_SCRUB_MAX_VALUE), 0);
    CU_ASSERT(rl_scrub_max_len(s) >= 3 * RL_SCRUB_MAX_VALUE);
    rl_scrub_free(s);
    rl_scrub_free(NULL);
    rl_scrub_stream_free(NULL);
}

static void test_empty_set(void)
{
    struct rl_scrub *s = NULL;
    const uint8_t text[] = "nothing to hide here";
    struct str r;
    long hits;
    size_t cuts[] = {3, 3, 9};

    CU_ASSERT_EQUAL_FATAL(rl_scrub_new(&s), 0);
    CU_ASSERT_EQUAL(rl_scrub_contains(s, text, sizeof(text) - 1), 0);
    r = scrub_copy(s, text, sizeof(text) - 1, &hits);
    CU_ASSERT(str_eq(&r, text, sizeof(text) - 1));
    CU_ASSERT_EQUAL(hits, 0);
    str_free(&r);
    r = scrub_stream(s, text, sizeof(text) - 1, cuts, 3, NULL);
    CU_ASSERT(str_eq(&r, text, sizeof(text) - 1));
    str_free(&r);
    rl_scrub_free(s);
}

/* Every form of every canary, framed by text, split at every offset. */
static void test_every_form_every_split(void)
{
    for (size_t c = 0; c < N_CANARIES; c++) {
        struct rl_scrub *s = set_of(CANARIES[c].v, CANARIES[c].n);
        struct forms fs;

        all_forms(&fs, CANARIES[c].v, CANARIES[c].n);
        CU_ASSERT(fs.n >= 15);
        for (size_t k = 0; k < fs.n; k++) {
            struct str text = {0}, want = {0}, r;
            long hits;
            int ok = 1;

            str_puts(&text, "<<");
            str_add(&text, fs.f[k].p, fs.f[k].len);
            str_puts(&text, ">>");
            str_puts(&want, "<<" MARK ">>");
            CU_ASSERT(rl_scrub_contains(s, text.p, text.len));
            CU_ASSERT(rl_scrub_contains(s, fs.f[k].p, fs.f[k].len));
            r = scrub_copy(s, text.p, text.len, &hits);
            ok = str_eq(&r, want.p, want.len) && hits == 1;
            CHECK(ok, "canary %s, form \"%s\": not redacted", CANARIES[c].name, fs.what[k]);
            str_free(&r);
            for (size_t cut = 0; ok && cut <= text.len; cut++) {
                unsigned long sh;
                r = scrub_stream(s, text.p, text.len, &cut, 1, &sh);
                ok = str_eq(&r, want.p, want.len) && sh == 1;
                CHECK(ok, "canary %s, form \"%s\": split at %zu", CANARIES[c].name, fs.what[k],
                      cut);
                str_free(&r);
            }
            str_free(&text);
            str_free(&want);
        }
        forms_free(&fs);
        rl_scrub_free(s);
    }
}

/* Browser and JSON.stringify outputs for the punctuation canary, as literals. */
static void test_literal_forms(void)
{
    static const char *const lit[] = {
        /* JSON.stringify("pa ss/w+rd\"q\\x~y*z!") */
        "pa ss/w+rd\\\"q\\\\x~y*z!",
        /* encodeURIComponent */
        "pa%20ss%2Fw%2Brd%22q%5Cx~y*z!",
        /* URLSearchParams / application/x-www-form-urlencoded */
        "pa+ss%2Fw%2Brd%22q%5Cx%7Ey*z%21",
        /* Python urllib.parse.quote (safe='/') */
        "pa%20ss/w%2Brd%22q%5Cx~y%2Az%21",
        /* mixed-case hex digits in %XX */
        "pa%20ss%2fw%2Brd%22q%5cx~y%2az%21",
    };
    struct rl_scrub *s = set_of(C_PUNCT, sizeof(C_PUNCT) - 1);

    for (size_t i = 0; i < sizeof(lit) / sizeof(lit[0]); i++) {
        CU_ASSERT(rl_scrub_contains(s, (const uint8_t *)lit[i], strlen(lit[i])));
    }
    rl_scrub_free(s);
    /* Python json.dumps (ensure_ascii) escapes DEL, which jansson leaves raw */
    {
        static const uint8_t v[] = "p\xc3\xa4ss\x7f-w0rd-123";
        static const char py[] = "p\\u00e4ss\\u007f-w0rd-123";
        struct rl_scrub *u = set_of(v, sizeof(v) - 1);
        struct str j = {0};
        CU_ASSERT(rl_scrub_contains(u, (const uint8_t *)py, strlen(py)));
        CU_ASSERT(enc_jansson(&j, v, sizeof(v) - 1, JSON_ENSURE_ASCII));
        CU_ASSERT(has(j.p, j.len, (const uint8_t *)"\x7f", 1));
        CU_ASSERT(rl_scrub_contains(u, j.p, j.len));
        str_free(&j);
        rl_scrub_free(u);
    }
    /* JSON.stringify of the binary canary: lower-case \u escapes, bytes >= 0x80 raw */
    {
        static const uint8_t js[] = "\\u0000\xff/\\\"\\\\ +\\u0001\x7f"
                                    "Ab\\u001f\x80";
        struct rl_scrub *b = set_of(C_BIN, sizeof(C_BIN));
        CU_ASSERT(rl_scrub_contains(b, js, sizeof(js) - 1));
        rl_scrub_free(b);
    }
}

/* JSON as other servers' encoders write it: Go's encoding/json (and Rails)
 * escape < > & and U+2028/2029; .NET's System.Text.Json default encoder
 * also ' " + ` (upper-case hex), DEL and non-ASCII. A token with a '+' (most
 * base64-like secrets) echoed by a .NET MCP server reads "\u002B". */
static void test_json_encoders(void)
{
    static const uint8_t v[] = "ab+cd/ef&gh<ij>kl'mn\"op`qr";
    static const char *const lit[] = {
        /* System.Text.Json, JavaScriptEncoder.Default */
        "ab\\u002Bcd/ef\\u0026gh\\u003Cij\\u003Ekl\\u0027mn\\u0022op\\u0060qr",
        /* ... carried in another JSON string */
        "ab\\\\u002Bcd/ef\\\\u0026gh\\\\u003Cij\\\\u003Ekl\\\\u0027mn\\\\u0022op\\\\u0060qr",
        /* Go json.Marshal */
        "ab+cd/ef\\u0026gh\\u003cij\\u003ekl'mn\\\"op`qr",
        /* ... carried in another JSON string */
        "ab+cd/ef\\\\u0026gh\\\\u003cij\\\\u003ekl'mn\\\\\\\"op`qr",
    };
    struct rl_scrub *s = set_of(v, sizeof(v) - 1);

    for (size_t i = 0; i < sizeof(lit) / sizeof(lit[0]); i++) {
        long hits;
        struct str text = {0}, r;
        CHECK(rl_scrub_contains(s, (const uint8_t *)lit[i], strlen(lit[i])), "form %zu: %s", i,
              lit[i]);
        /* inside a JSON-RPC result, one-shot and streamed one byte at a time */
        str_puts(&text, "{\"result\":{\"content\":[{\"text\":\"");
        str_puts(&text, lit[i]);
        str_puts(&text, "\"}]}}");
        r = scrub_copy(s, text.p, text.len, &hits);
        CHECK(hits == 1 && !has(r.p, r.len, (const uint8_t *)"u002", 4), "form %zu scrubbed", i);
        {
            size_t cuts[512];
            unsigned long sh = 0;
            struct str rs;
            for (size_t k = 0; k + 1 < text.len && k < 512; k++)
                cuts[k] = k + 1;
            rs = scrub_stream(s, text.p, text.len, cuts, text.len - 1 < 512 ? text.len - 1 : 512,
                              &sh);
            CHECK(sh == 1 && str_eq(&rs, r.p, r.len), "form %zu streamed", i);
            str_free(&rs);
        }
        str_free(&r);
        str_free(&text);
    }
    rl_scrub_free(s);
    /* .NET: '+' in a base64-like token, non-ASCII as upper-case \uXXXX */
    {
        static const uint8_t t[] = "Zm9v+YmFy/cXV4\xc3\xa9";
        static const char net[] = "Zm9v\\u002BYmFy/cXV4\\u00E9";
        struct rl_scrub *u = set_of(t, sizeof(t) - 1);
        CU_ASSERT(rl_scrub_contains(u, (const uint8_t *)net, strlen(net)));
        rl_scrub_free(u);
    }
    /* Go: U+2028 and U+2029 as escapes, other non-ASCII raw */
    {
        static const uint8_t t[] = "pass\xe2\x80\xa8w\xc3\xb6rd\xe2\x80\xa9!";
        static const char go[] = "pass\\u2028w\xc3\xb6rd\\u2029!";
        struct rl_scrub *u = set_of(t, sizeof(t) - 1);
        CU_ASSERT(rl_scrub_contains(u, (const uint8_t *)go, strlen(go)));
        rl_scrub_free(u);
    }
}

/* The value inside longer base64 text: every alignment, both alphabets,
 * padded or not. Exactly the characters that depend only on the value are
 * replaced (plus the tail when the value ends the text). */
static void test_base64_alignment(void)
{
    static const uint8_t pre[] = {0x3c, 0x91, 0x07, 0xe2, 0x5d};
    static const uint8_t suf[] = {0xa5, 0x5a, 0xc3, 0x3c};

    for (size_t c = 0; c < N_CANARIES; c++) {
        const uint8_t *v = CANARIES[c].v;
        size_t n = CANARIES[c].n;
        struct rl_scrub *s = set_of(v, n);

        for (size_t np = 0; np <= sizeof(pre); np++) {
            for (size_t ns = 0; ns <= sizeof(suf); ns++) {
                for (int mode = 0; mode < 4; mode++) {
                    struct str raw = {0}, b = {0}, text = {0}, want = {0}, r;
                    size_t first = (4 * np + 2) / 3, last = 8 * (np + n) / 6, y;

                    str_add(&raw, pre, np);
                    str_add(&raw, v, n);
                    str_add(&raw, suf, ns);
                    enc_b64(&b, raw.p, raw.len, mode & 1, mode & 2);
                    y = ns ? last : b.len;
                    str_puts(&text, "x=");
                    str_add(&text, b.p, b.len);
                    str_puts(&text, ";");
                    str_puts(&want, "x=");
                    str_add(&want, b.p, first);
                    str_puts(&want, MARK);
                    str_add(&want, b.p + y, b.len - y);
                    str_puts(&want, ";");
                    r = scrub_copy(s, text.p, text.len, NULL);
                    CHECK(str_eq(&r, want.p, want.len),
                          "canary %s, %zu bytes before, %zu after, %s, %s", CANARIES[c].name, np,
                          ns, mode & 1 ? "url" : "standard", mode & 2 ? "padded" : "unpadded");
                    str_free(&r);
                    str_free(&raw);
                    str_free(&b);
                    str_free(&text);
                    str_free(&want);
                }
            }
        }
        rl_scrub_free(s);
    }
}

/* Base64 whose '/' a JSON encoder wrote as "\/", and base64 in a query string. */
static void test_base64_escaped(void)
{
    /* a value whose standard base64 has '/' and '+' at every alignment */
    static const uint8_t v[] = {0xfb, 0xef, 0xbe, 0xff, 0xfb, 0xef,
                                0xbe, 0xff, 0xfb, 0xef, 0xbe, 0xff};
    struct rl_scrub *s = set_of(v, sizeof(v));

    for (size_t lead = 0; lead < 3; lead++) {
        struct str raw = {0}, b = {0}, j = {0}, p = {0};
        str_add(&raw, "ab", lead);
        str_add(&raw, v, sizeof(v));
        enc_b64(&b, raw.p, raw.len, 0, 1);
        CU_ASSERT(has(b.p + 3, b.len - 6, (const uint8_t *)"/", 1));
        CU_ASSERT(has(b.p + 3, b.len - 6, (const uint8_t *)"+", 1));
        enc_jansson(&j, b.p, b.len, JSON_ESCAPE_SLASH);
        CU_ASSERT(has(j.p, j.len, (const uint8_t *)"\\/", 2));
        CU_ASSERT(rl_scrub_contains(s, j.p, j.len));
        enc_pct(&p, b.p, b.len, UNRESERVED, 1, 0);
        CU_ASSERT(rl_scrub_contains(s, p.p, p.len));
        str_free(&raw);
        str_free(&b);
        str_free(&j);
        str_free(&p);
    }
    rl_scrub_free(s);
}

static void test_header_values(void)
{
    struct rl_scrub *s = set_of(C_TOKEN, sizeof(C_TOKEN) - 1);
    struct str h = {0}, basic = {0}, cred = {0};

    str_puts(&h, "Bearer ");
    str_add(&h, C_TOKEN, sizeof(C_TOKEN) - 1);
    CU_ASSERT(rl_scrub_contains(s, h.p, h.len));
    /* Basic auth: the value at alignment len("svc:") % 3 = 1 inside base64 */
    str_puts(&cred, "svc:");
    str_add(&cred, C_TOKEN, sizeof(C_TOKEN) - 1);
    str_puts(&basic, "Basic ");
    enc_b64(&basic, cred.p, cred.len, 0, 1);
    CU_ASSERT(rl_scrub_contains(s, basic.p, basic.len));
    CU_ASSERT_FALSE(rl_scrub_contains(s, (const uint8_t *)"Bearer sk-live-other", 20));
    CU_ASSERT_FALSE(rl_scrub_contains(s, (const uint8_t *)"", 0));
    CU_ASSERT_FALSE(rl_scrub_contains(s, C_TOKEN, sizeof(C_TOKEN) - 2)); /* one byte short */
    str_free(&h);
    str_free(&basic);
    str_free(&cred);
    rl_scrub_free(s);
}

static void test_false_positives(void)
{
    static const char *const texts[] = {
        ("{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":"
         "\"The quick brown fox jumps over the lazy dog. 0123456789 abcdef ABCDEF\"}]}}"),
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
        "sk-live-7f3Kq9Zp2Xw8Lm4NvB6u", /* last byte differs */
        "Sk-live-7f3Kq9Zp2Xw8Lm4NvB6t", /* raw forms are case-sensitive */
        "pa%20ss%2Fw%2Brd%22q%5Cx~y*z", /* percent form of a prefix */
    };
    struct rl_scrub *s = set_of_all();
    uint8_t all[512];

    /* every form of each canary minus its last byte */
    for (size_t c = 0; c < N_CANARIES; c++) {
        struct forms fs;
        all_forms(&fs, CANARIES[c].v, CANARIES[c].n - 1);
        for (size_t k = 0; k < fs.n; k++)
            CU_ASSERT_FALSE(rl_scrub_contains(s, fs.f[k].p, fs.f[k].len));
        forms_free(&fs);
    }

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        long hits;
        struct str r = scrub_copy(s, (const uint8_t *)texts[i], strlen(texts[i]), &hits);
        CU_ASSERT_EQUAL(hits, 0);
        CU_ASSERT(str_eq(&r, texts[i], strlen(texts[i])));
        CU_ASSERT_FALSE(rl_scrub_contains(s, (const uint8_t *)texts[i], strlen(texts[i])));
        str_free(&r);
    }
    for (size_t i = 0; i < sizeof(all); i++) /* every byte value, twice */
        all[i] = (uint8_t)i;
    CU_ASSERT_FALSE(rl_scrub_contains(s, all, sizeof(all)));
    rl_scrub_free(s);

    /* other values' forms do not match */
    {
        static const uint8_t other[] = "sk-live-7f3Kq9Zp2Xw8Lm4NvB6T";
        struct rl_scrub *t = set_of(other, sizeof(other) - 1);
        for (size_t c = 0; c < N_CANARIES; c++) {
            struct forms fs;
            all_forms(&fs, CANARIES[c].v, CANARIES[c].n);
            for (size_t k = 0; k < fs.n; k++)
                CU_ASSERT_FALSE(rl_scrub_contains(t, fs.f[k].p, fs.f[k].len));
            forms_free(&fs);
        }
        rl_scrub_free(t);
    }
}

static void test_multiple_values(void)
{
    struct rl_scrub *s = set_of_all();
    struct str text = {0}, want = {0}, r;
    size_t npat = rl_scrub_patterns(s);
    long hits;

    for (size_t c = 0; c < N_CANARIES; c++) {
        struct forms fs;
        all_forms(&fs, CANARIES[c].v, CANARIES[c].n);
        str_puts(&text, "[k] ");
        str_add(&text, fs.f[c * 3 % fs.n].p, fs.f[c * 3 % fs.n].len);
        str_puts(&text, " [v] ");
        str_add(&text, fs.f[(c * 5 + 1) % fs.n].p, fs.f[(c * 5 + 1) % fs.n].len);
        str_puts(&want, "[k] " MARK " [v] " MARK);
        forms_free(&fs);
    }
    r = scrub_copy(s, text.p, text.len, &hits);
    CU_ASSERT(str_eq(&r, want.p, want.len));
    CU_ASSERT_EQUAL(hits, 2 * (long)N_CANARIES);
    str_free(&r);
    /* adding a value again derives nothing new */
    CU_ASSERT_EQUAL(rl_scrub_add(s, C_PUNCT, sizeof(C_PUNCT) - 1), 0);
    CU_ASSERT_EQUAL(rl_scrub_patterns(s), npat);
    str_free(&text);
    str_free(&want);
    rl_scrub_free(s);
}

static void test_overlap_adjacent_edges(void)
{
    /* two values whose raw forms overlap */
    static const uint8_t a[] = "alpha-bravo-charlie", b[] = "charlie-delta-echo";
    /* a raw form overlapping another value's hex form: hex(h) = "cafe0123456789ab" */
    static const uint8_t x[] = "xyz-cafe0123",
                         h[] = {0xca, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab};
    struct rl_scrub *s = NULL;
    struct {
        const char *in, *out;
        long hits;
    } cases[] = {
        {"alpha-bravo-charlie-delta-echo", MARK, 1},
        {"[alpha-bravo-charlie-delta-echo]", "[" MARK "]", 1},
        {"xyz-cafe0123456789ab!", MARK "!", 1},
        {"xyz-CAFE0123456789AB!", "xyz-" MARK "!", 1}, /* raw is case-sensitive, hex is not */
        {"alpha-bravo-charliealpha-bravo-charlie", MARK MARK, 2},
        {"alpha-bravo-charliecafe0123456789ab", MARK MARK, 2},
        {"alpha-bravo-charlie", MARK, 1},
        {"alpha-bravo-charlie.", MARK ".", 1},
        {".alpha-bravo-charlie", "." MARK, 1},
        {"alpha-bravo-charli", "alpha-bravo-charli", 0},
        {"", "", 0},
    };

    CU_ASSERT_EQUAL_FATAL(rl_scrub_new(&s), 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, a, sizeof(a) - 1), 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, b, sizeof(b) - 1), 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, x, sizeof(x) - 1), 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_add(s, h, sizeof(h)), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *in = (const uint8_t *)cases[i].in;
        size_t n = strlen(cases[i].in);
        long hits;
        struct str r = scrub_copy(s, in, n, &hits);
        CHECK(str_eq(&r, cases[i].out, strlen(cases[i].out)) && hits == cases[i].hits,
              "\"%s\": one-shot", cases[i].in);
        str_free(&r);
        for (size_t cut = 0; cut <= n; cut++) {
            unsigned long sh;
            size_t cuts[] = {cut, cut, cut + (n - cut) / 2}; /* with an empty feed */
            r = scrub_stream(s, in, n, cuts, 3, &sh);
            CHECK(str_eq(&r, cases[i].out, strlen(cases[i].out)) &&
                      sh == (unsigned long)cases[i].hits,
                  "\"%s\": split at %zu", cases[i].in, cut);
            str_free(&r);
        }
    }
    rl_scrub_free(s);
}

static void test_hold_and_finish(void)
{
    struct rl_scrub *s = set_of(C_TOKEN, sizeof(C_TOKEN) - 1);
    struct rl_scrub_stream *st = NULL;
    struct rl_buf out;
    size_t keep = rl_scrub_max_len(s) - 1;
    uint8_t *big = malloc(keep * 4);

    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, '.', keep * 4);
    rl_buf_init(&out, 0);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_stream_new(s, &st), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, big, 0, &out), 0); /* empty feed */
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, (const uint8_t *)"", 0, &out), 0);
    CU_ASSERT_EQUAL(out.len, 0);
    /* "sk-li" could be the start of the token: held; nothing else is */
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, (const uint8_t *)"sk-li", 5, &out), 0);
    CU_ASSERT_EQUAL(out.len, 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 5);
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), 0); /* finish flushes */
    CU_ASSERT_EQUAL(out.len, 5);
    CU_ASSERT_EQUAL(memcmp(out.p, "sk-li", 5), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0);
    rl_buf_reset(&out);
    /* a short SSE event that cannot begin any form passes at once */
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, (const uint8_t *)": ping\n\n", 8, &out), 0);
    CU_ASSERT_EQUAL(out.len, 8);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0);
    /* an event ending in what could start the token keeps only that part */
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, (const uint8_t *)"data: x sk-", 11, &out), 0);
    CU_ASSERT_EQUAL(out.len, 8 + 8);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 3);
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, C_TOKEN + 3, sizeof(C_TOKEN) - 4, &out), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0); /* the whole token: known, replaced */
    CU_ASSERT_EQUAL(out.len, 16 + MARK_LEN);
    CU_ASSERT_EQUAL(memcmp(out.p + 16, MARK, MARK_LEN), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), 0); /* twice is fine */
    CU_ASSERT_EQUAL(out.len, 16 + MARK_LEN);
    rl_buf_reset(&out);
    CU_ASSERT_EQUAL(rl_scrub_stream_hits(st), 1);
    /* a large feed of bytes that start no form passes entirely */
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, big, keep * 4, &out), 0);
    CU_ASSERT_EQUAL(out.len, keep * 4);
    CU_ASSERT_EQUAL(rl_scrub_stream_held(st), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, C_TOKEN, sizeof(C_TOKEN) - 1, &out), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), 0);
    CU_ASSERT_EQUAL(out.len, keep * 4 + MARK_LEN);
    CU_ASSERT_EQUAL(memcmp(out.p + keep * 4, MARK, MARK_LEN), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_hits(st), 2);
    rl_scrub_stream_free(st);
    rl_buf_cleanup(&out);
    free(big);
    rl_scrub_free(s);
}

/* Output over its cap: an error, nothing appended (the raw bytes and mark
 * appended before the failing append are taken back), the stream unusable. */
static void test_output_cap(void)
{
    struct rl_scrub *s = set_of(C_TOKEN, sizeof(C_TOKEN) - 1);
    struct rl_scrub_stream *st = NULL;
    struct rl_buf out;
    uint8_t text[1024];

    memset(text, 'q', sizeof(text));
    memcpy(text + 400, C_TOKEN, sizeof(C_TOKEN) - 1);
    rl_buf_init(&out, 600);
    CU_ASSERT_EQUAL(rl_buf_append(&out, "head", 4), 0);
    CU_ASSERT_EQUAL(rl_scrub_copy(s, text, sizeof(text), &out), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(out.len, 4);
    CU_ASSERT_EQUAL_FATAL(rl_scrub_stream_new(s, &st), 0);
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, text, sizeof(text), &out), AL_ERR_TOOBIG);
    CU_ASSERT_EQUAL(out.len, 4);
    CU_ASSERT_EQUAL(rl_scrub_stream_feed(st, text, 1, &out), AL_ERR_STATE);
    CU_ASSERT_EQUAL(rl_scrub_stream_finish(st, &out), AL_ERR_STATE);
    rl_scrub_stream_free(st);
    rl_buf_cleanup(&out);
    rl_scrub_free(s);
}

static uint32_t rnd_state = 0x2545f491u;

static uint32_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 17;
    rnd_state ^= rnd_state << 5;
    return rnd_state;
}

/* Random documents of noise, whole forms, truncated forms and near misses,
 * streamed in random chunks (empty ones too): the output equals one-shot
 * scrubbing, and no form of any canary is left in it. */
static void test_random_chunking(void)
{
    static const char noise[] = "abcdefABCDEF0123456789+/=%\\\"-_ .{}:,\n";
    struct rl_scrub *s = set_of_all();
    struct forms fs[N_CANARIES];
    size_t max = rl_scrub_max_len(s);

    for (size_t c = 0; c < N_CANARIES; c++)
        all_forms(&fs[c], CANARIES[c].v, CANARIES[c].n);
    for (int round = 0; round < 300; round++) {
        struct str doc = {0}, one, str;
        size_t cuts[64], ncuts = 0, at = 0;
        long hits;
        unsigned long sh;

        for (int piece = 0; piece < 12; piece++) {
            uint32_t r = rnd();
            const struct forms *f = &fs[r % N_CANARIES];
            const struct str *form = &f->f[(r >> 8) % f->n];
            switch ((r >> 16) % 4) {
            case 0: /* noise */
                for (uint32_t k = rnd() % 40; k > 0; k--)
                    str_add(&doc, &noise[rnd() % (sizeof(noise) - 1)], 1);
                break;
            case 1: /* a whole form */
                str_add(&doc, form->p, form->len);
                break;
            case 2: /* a truncated form */
                str_add(&doc, form->p, rnd() % form->len);
                break;
            default: /* a form with one byte changed */
                str_add(&doc, form->p, form->len);
                doc.p[doc.len - 1 - rnd() % form->len] ^= 0x01;
                break;
            }
        }
        while (ncuts < 64 && at < doc.len && rnd() % 8) {
            at += rnd() % (2 * max);
            cuts[ncuts++] = at < doc.len ? at : doc.len;
        }
        one = scrub_copy(s, doc.p, doc.len, &hits);
        str = scrub_stream(s, doc.p, doc.len, cuts, ncuts, &sh);
        CU_ASSERT(str_eq(&str, one.p, one.len));
        CU_ASSERT_EQUAL((long)sh, hits);
        CU_ASSERT_FALSE(rl_scrub_contains(s, one.p, one.len));
        for (size_t c = 0; c < N_CANARIES; c++)
            for (size_t k = 0; k < fs[c].n; k++)
                CU_ASSERT_FALSE(has(one.p, one.len, fs[c].f[k].p, fs[c].f[k].len));
        str_free(&doc);
        str_free(&one);
        str_free(&str);
    }
    for (size_t c = 0; c < N_CANARIES; c++)
        forms_free(&fs[c]);
    rl_scrub_free(s);
}

/* The longest value: its forms are found in a stream fed in small pieces. */
static void test_max_value(void)
{
    uint8_t *v = malloc(RL_SCRUB_MAX_VALUE);
    struct rl_scrub *s;
    struct str text = {0}, want = {0}, r;
    size_t cuts[200];

    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    for (size_t i = 0; i < RL_SCRUB_MAX_VALUE; i++)
        v[i] = (uint8_t)rnd();
    s = set_of(v, RL_SCRUB_MAX_VALUE);
    str_puts(&text, "<<");
    str_add(&text, v, RL_SCRUB_MAX_VALUE);
    str_puts(&text, ">> <<");
    enc_hex(&text, v, RL_SCRUB_MAX_VALUE, 1);
    str_puts(&text, ">> <<");
    enc_b64(&text, v, RL_SCRUB_MAX_VALUE, 1, 0);
    str_puts(&text, ">> <<");
    enc_pct(&text, v, RL_SCRUB_MAX_VALUE, NULL, 0, 0);
    str_puts(&text, ">>");
    str_puts(&want, "<<" MARK ">> <<" MARK ">> <<" MARK ">> <<" MARK ">>");
    for (size_t i = 0; i < 200; i++)
        cuts[i] = i * (text.len / 200) + i % 7;
    r = scrub_stream(s, text.p, text.len, cuts, 200, NULL);
    CU_ASSERT(str_eq(&r, want.p, want.len));
    str_free(&r);
    str_free(&text);
    str_free(&want);
    rl_scrub_free(s);
    free(v);
}

int main(void)
{
    CU_pSuite s;
    int failed;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("relay_scrub", NULL, NULL);
    CU_add_test(s, "value length limits", test_limits);
    CU_add_test(s, "empty set passes bytes through", test_empty_set);
    CU_add_test(s, "every form at every split point", test_every_form_every_split);
    CU_add_test(s, "encoder outputs as literals", test_literal_forms);
    CU_add_test(s, "JSON as Go and .NET encoders write it", test_json_encoders);
    CU_add_test(s, "base64 at every alignment", test_base64_alignment);
    CU_add_test(s, "base64 JSON- and percent-escaped", test_base64_escaped);
    CU_add_test(s, "header values (contains)", test_header_values);
    CU_add_test(s, "false positives", test_false_positives);
    CU_add_test(s, "multiple values in one set", test_multiple_values);
    CU_add_test(s, "overlapping, adjacent, start and end", test_overlap_adjacent_edges);
    CU_add_test(s, "hold-back, empty feeds, finish", test_hold_and_finish);
    CU_add_test(s, "output cap", test_output_cap);
    CU_add_test(s, "random chunking equals one-shot", test_random_chunking);
    CU_add_test(s, "longest value", test_max_value);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
