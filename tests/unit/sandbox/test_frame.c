/* Unit tests for sandbox/frame.c: file-operation output frames round-trip
 * across every split, malformed streams are refused, names become valid
 * UTF-8. */
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "al_err.h"
#include "sb_int.h"

struct got {
    uint8_t data[4 * SB_CHUNK_MAX];
    size_t data_len, data_frames;
    char names[64][300];
    struct sb_dirent ents[64];
    size_t n_ents;
};

static void on_data(void *user, const uint8_t *p, size_t n)
{
    struct got *g = user;
    if (g->data_len + n <= sizeof(g->data))
        memcpy(g->data + g->data_len, p, n);
    g->data_len += n;
    g->data_frames++;
}

static void on_dirents(void *user, const struct sb_dirent *e, size_t n)
{
    struct got *g = user;
    for (size_t i = 0; i < n && g->n_ents < 64; i++) {
        snprintf(g->names[g->n_ents], sizeof(g->names[0]), "%s", e[i].name);
        g->ents[g->n_ents] = e[i];
        g->ents[g->n_ents].name = g->names[g->n_ents];
        g->n_ents++;
    }
}

/* A stream of: data "hello", entry "a.txt", data 70000 bytes (2 frames),
 * entry with a non-UTF-8 name. */
static size_t build_stream(uint8_t *out)
{
    size_t o = 0;
    sb_frame_data_header(out, 5);
    memcpy(out + SB_FRAME_HDR, "hello", 5);
    o += SB_FRAME_HDR + 5;
    struct sb_dirent e = {"a.txt", SB_FT_REGULAR, 1234, 0644, 1700000000123LL};
    o += sb_frame_dirent(out + o, &e, 5);
    for (int part = 0; part < 2; part++) {
        size_t len = part ? 70000 - SB_CHUNK_MAX : SB_CHUNK_MAX;
        sb_frame_data_header(out + o, len);
        memset(out + o + SB_FRAME_HDR, 'a' + part, len);
        o += SB_FRAME_HDR + len;
    }
    struct sb_dirent bad = {"x\xff"
                            "y",
                            SB_FT_SYMLINK, 0, 0777, -5};
    o += sb_frame_dirent(out + o, &bad, 3);
    return o;
}

static void check(const struct got *g)
{
    CU_ASSERT_EQUAL(g->data_len, 5 + 70000);
    CU_ASSERT_EQUAL(g->data_frames, 3);
    CU_ASSERT_EQUAL(memcmp(g->data, "hello", 5), 0);
    CU_ASSERT_EQUAL(g->data[5], 'a');
    CU_ASSERT_EQUAL(g->data[5 + SB_CHUNK_MAX], 'b');
    CU_ASSERT_EQUAL_FATAL(g->n_ents, 2);
    CU_ASSERT_STRING_EQUAL(g->ents[0].name, "a.txt");
    CU_ASSERT_EQUAL(g->ents[0].type, SB_FT_REGULAR);
    CU_ASSERT_EQUAL(g->ents[0].size, 1234);
    CU_ASSERT_EQUAL(g->ents[0].mode, 0644);
    CU_ASSERT_EQUAL(g->ents[0].mtime_ms, 1700000000123LL);
    CU_ASSERT_STRING_EQUAL(g->ents[1].name, "x\xef\xbf\xbdy");
    CU_ASSERT_EQUAL(g->ents[1].type, SB_FT_SYMLINK);
    CU_ASSERT_EQUAL(g->ents[1].mtime_ms, -5);
}

static void test_round_trip_every_split(void)
{
    static uint8_t stream[3 * SB_CHUNK_MAX];
    size_t n = build_stream(stream);
    static const size_t splits[] = {1, 2, 4, 5, 6, 7, 25, 26, 27, 4096, 65536, 65541, 65542};
    for (size_t s = 0; s < sizeof(splits) / sizeof(splits[0]); s++) {
        struct sb_frame_dec d;
        static struct got g;
        memset(&g, 0, sizeof(g));
        struct sb_frame_sink sink = {on_data, on_dirents, &g};
        CU_ASSERT_EQUAL_FATAL(sb_frame_dec_init(&d), 0);
        for (size_t off = 0; off < n; off += splits[s]) {
            size_t len = n - off < splits[s] ? n - off : splits[s];
            CU_ASSERT_EQUAL_FATAL(sb_frame_dec_feed(&d, stream + off, len, &sink), 0);
        }
        CU_ASSERT_FALSE(sb_frame_dec_partial(&d));
        check(&g);
        sb_frame_dec_cleanup(&d);
    }
    /* one byte short: the decoder knows it stopped mid-frame */
    struct sb_frame_dec d;
    static struct got g;
    struct sb_frame_sink sink = {on_data, on_dirents, &g};
    sb_frame_dec_init(&d);
    CU_ASSERT_EQUAL(sb_frame_dec_feed(&d, stream, n - 1, &sink), 0);
    CU_ASSERT_TRUE(sb_frame_dec_partial(&d));
    sb_frame_dec_cleanup(&d);
}

static int feed_bytes(const uint8_t *p, size_t n, char *why, size_t why_len)
{
    struct sb_frame_dec d;
    static struct got g;
    struct sb_frame_sink sink = {on_data, on_dirents, &g};
    sb_frame_dec_init(&d);
    int rc = sb_frame_dec_feed(&d, p, n, &sink);
    snprintf(why, why_len, "%s", d.err);
    /* once broken, always broken */
    if (rc < 0)
        CU_ASSERT_EQUAL(sb_frame_dec_feed(&d, (const uint8_t *)"D", 1, &sink), AL_ERR_PROTO);
    sb_frame_dec_cleanup(&d);
    return rc;
}

static void test_malformed(void)
{
    char why[96];
    uint8_t b[SB_FRAME_HDR + SB_DIRENT_FIXED + 300];
    /* unknown type */
    memcpy(b, "X\0\0\0\1x", 6);
    CU_ASSERT_EQUAL(feed_bytes(b, 6, why, sizeof(why)), AL_ERR_PROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "unknown"));
    /* empty and oversized data frames */
    sb_frame_data_header(b, 0);
    CU_ASSERT_EQUAL(feed_bytes(b, SB_FRAME_HDR, why, sizeof(why)), AL_ERR_PROTO);
    sb_frame_data_header(b, SB_CHUNK_MAX + 1);
    CU_ASSERT_EQUAL(feed_bytes(b, SB_FRAME_HDR, why, sizeof(why)), AL_ERR_PROTO);
    /* entry frames: too short, too long a name, "/" or NUL in the name, bad type */
    struct sb_dirent e = {"ok", SB_FT_REGULAR, 0, 0, 0};
    size_t n = sb_frame_dirent(b, &e, 2);
    b[4] = SB_DIRENT_FIXED; /* length without a name */
    CU_ASSERT_EQUAL(feed_bytes(b, n, why, sizeof(why)), AL_ERR_PROTO);
    n = sb_frame_dirent(b, &e, 2);
    b[n - 1] = '/';
    CU_ASSERT_EQUAL(feed_bytes(b, n, why, sizeof(why)), AL_ERR_PROTO);
    n = sb_frame_dirent(b, &e, 2);
    b[n - 1] = '\0';
    CU_ASSERT_EQUAL(feed_bytes(b, n, why, sizeof(why)), AL_ERR_PROTO);
    n = sb_frame_dirent(b, &e, 2);
    b[SB_FRAME_HDR] = 9;
    CU_ASSERT_EQUAL(feed_bytes(b, n, why, sizeof(why)), AL_ERR_PROTO);
    b[0] = SB_FRAME_DIRENT;
    b[1] = 0, b[2] = 0, b[3] = 1, b[4] = 0x15; /* 277 bytes: a 256-byte name */
    CU_ASSERT_EQUAL(feed_bytes(b, SB_FRAME_HDR, why, sizeof(why)), AL_ERR_PROTO);
    /* the encoder refuses names it could not send */
    struct sb_dirent slash = {"a/b", SB_FT_REGULAR, 0, 0, 0};
    CU_ASSERT_EQUAL(sb_frame_dirent(b, &slash, 3), 0);
    CU_ASSERT_EQUAL(sb_frame_dirent(b, &e, 0), 0);
}

static void test_utf8(void)
{
    char out[64];
    struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        {"plain", 5, "plain"},
        {"\xc3\xa9", 2, "\xc3\xa9"},                                 /* é */
        {"\xe2\x82\xac", 3, "\xe2\x82\xac"},                         /* € */
        {"\xf0\x9f\x98\x80", 4, "\xf0\x9f\x98\x80"},                 /* emoji */
        {"\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong "/" */
        {"\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
        {"\xf4\x90\x80\x80", 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"a\xe2\x82", 3, "a\xef\xbf\xbd\xef\xbf\xbd"}, /* truncated */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = sb_utf8_sanitize(out, (const uint8_t *)cases[i].in, cases[i].n);
        CU_ASSERT_STRING_EQUAL(out, cases[i].want);
        CU_ASSERT_EQUAL(n, strlen(cases[i].want));
    }
}

int main(void)
{
    CU_pSuite s;
    int failed;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("sandbox frame", NULL, NULL);
    CU_add_test(s, "round trip at every split", test_round_trip_every_split);
    CU_add_test(s, "malformed streams", test_malformed);
    CU_add_test(s, "UTF-8 sanitizing", test_utf8);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = (int)CU_get_number_of_failures() + (int)CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
