/*
 * frame: the file-operation output format on the sandbox's stdout pipe.
 *
 * A file operation runs inside the sandbox (fileops.c) and sends what it
 * read as frames (sb_int.h has the layout): 'D' frames carry file bytes,
 * 'E' frames one directory entry. The parent decodes them incrementally
 * (pipe reads cut frames anywhere) and treats the stream as untrusted:
 * unknown types, empty or oversized payloads, and entry names with "/" or
 * NUL end decoding with AL_ERR_PROTO. Names are made valid UTF-8 here.
 */
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "sb_int.h"

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void sb_frame_data_header(uint8_t hdr[SB_FRAME_HDR], size_t len)
{
    hdr[0] = SB_FRAME_DATA;
    put32(hdr + 1, (uint32_t)len);
}

static int name_ok(const uint8_t *name, size_t len)
{
    if (len == 0 || len > SB_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/' || name[i] == '\0')
            return 0;
    return 1;
}

size_t sb_frame_dirent(uint8_t *buf, const struct sb_dirent *e, size_t name_len)
{
    if (!name_ok((const uint8_t *)e->name, name_len))
        return 0;
    uint8_t *p = buf + SB_FRAME_HDR;
    buf[0] = SB_FRAME_DIRENT;
    put32(buf + 1, (uint32_t)(SB_DIRENT_FIXED + name_len));
    p[0] = (uint8_t)e->type;
    put32(p + 1, e->mode);
    put64(p + 5, (uint64_t)e->size);
    put64(p + 13, (uint64_t)e->mtime_ms);
    memcpy(p + SB_DIRENT_FIXED, e->name, name_len);
    return SB_FRAME_HDR + SB_DIRENT_FIXED + name_len;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t min, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

size_t sb_utf8_sanitize(char *dst, const uint8_t *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(src + i, n - i);
        if (l == 0) {
            memcpy(dst + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(dst + o, src + i, l);
            o += l;
            i += l;
        }
    }
    dst[o] = '\0';
    return o;
}

int sb_frame_dec_init(struct sb_frame_dec *d)
{
    memset(d, 0, sizeof(*d));
    d->payload = malloc(SB_CHUNK_MAX);
    return d->payload ? 0 : AL_ERR_NOMEM;
}

void sb_frame_dec_cleanup(struct sb_frame_dec *d)
{
    free(d->payload);
    free(d->ents);
    free(d->names);
    memset(d, 0, sizeof(*d));
}

int sb_frame_dec_partial(const struct sb_frame_dec *d)
{
    return d->hdr_have > 0;
}

static int fail(struct sb_frame_dec *d, const char *why)
{
    size_t n = strlen(why);
    if (n >= sizeof(d->err))
        n = sizeof(d->err) - 1;
    memcpy(d->err, why, n);
    d->err[n] = '\0';
    return AL_ERR_PROTO;
}

/* Validates a complete header; sets need and type. */
static int start_frame(struct sb_frame_dec *d)
{
    uint32_t len = get32(d->hdr + 1);
    d->type = d->hdr[0];
    d->have = 0;
    if (d->type == SB_FRAME_DATA) {
        if (len == 0 || len > SB_CHUNK_MAX)
            return fail(d, "data frame length out of range");
    } else if (d->type == SB_FRAME_DIRENT) {
        if (len <= SB_DIRENT_FIXED || len > SB_DIRENT_FIXED + SB_NAME_MAX)
            return fail(d, "entry frame length out of range");
    } else {
        return fail(d, "unknown frame type");
    }
    d->need = len;
    return 0;
}

/* Room for one more entry and its name (sanitized: up to 3 bytes per byte). */
static int reserve_entry(struct sb_frame_dec *d, size_t name_len)
{
    if (d->n_ents == d->cap_ents) {
        size_t cap = d->cap_ents ? d->cap_ents * 2 : 64;
        struct sb_dirent *e = realloc(d->ents, cap * sizeof(*e));
        if (!e)
            return AL_ERR_NOMEM;
        d->ents = e;
        d->cap_ents = cap;
    }
    size_t need = d->names_used + 3 * name_len + 1;
    if (need > d->names_cap) {
        size_t cap = d->names_cap ? d->names_cap : 4096;
        while (cap < need)
            cap *= 2;
        char *s = realloc(d->names, cap);
        if (!s)
            return AL_ERR_NOMEM;
        /* entries point into names: rebase them */
        for (size_t i = 0; i < d->n_ents; i++)
            d->ents[i].name = s + (d->ents[i].name - d->names);
        d->names = s;
        d->names_cap = cap;
    }
    return 0;
}

static int finish_dirent(struct sb_frame_dec *d)
{
    const uint8_t *p = d->payload;
    size_t name_len = d->need - SB_DIRENT_FIXED;
    if (!name_ok(p + SB_DIRENT_FIXED, name_len))
        return fail(d, "entry name with '/' or NUL");
    if (p[0] < SB_FT_REGULAR || p[0] > SB_FT_OTHER)
        return fail(d, "entry type out of range");
    int rc = reserve_entry(d, name_len);
    if (rc < 0)
        return rc;
    struct sb_dirent *e = &d->ents[d->n_ents++];
    char *name = d->names + d->names_used;
    d->names_used += sb_utf8_sanitize(name, p + SB_DIRENT_FIXED, name_len) + 1;
    e->name = name;
    e->type = (enum sb_file_type)p[0];
    e->mode = get32(p + 1) & 07777;
    e->size = (int64_t)get64(p + 5);
    e->mtime_ms = (int64_t)get64(p + 13);
    return 0;
}

static int finish_frame(struct sb_frame_dec *d, const struct sb_frame_sink *sink)
{
    int rc = 0;
    if (d->type == SB_FRAME_DATA) {
        if (sink->data)
            sink->data(sink->user, d->payload, d->need);
    } else {
        rc = finish_dirent(d);
    }
    d->hdr_have = 0;
    d->need = d->have = 0;
    return rc;
}

int sb_frame_dec_feed(struct sb_frame_dec *d, const uint8_t *p, size_t n,
                      const struct sb_frame_sink *sink)
{
    int rc = 0;
    if (d->err[0])
        return AL_ERR_PROTO;
    while (n > 0 && rc == 0) {
        if (d->hdr_have < SB_FRAME_HDR) {
            size_t take = SB_FRAME_HDR - d->hdr_have;
            take = take < n ? take : n;
            memcpy(d->hdr + d->hdr_have, p, take);
            d->hdr_have += take, p += take, n -= take;
            if (d->hdr_have == SB_FRAME_HDR)
                rc = start_frame(d);
            continue;
        }
        size_t take = d->need - d->have;
        take = take < n ? take : n;
        memcpy(d->payload + d->have, p, take);
        d->have += take, p += take, n -= take;
        if (d->have == d->need)
            rc = finish_frame(d, sink);
    }
    if (d->n_ents > 0 && rc == 0 && sink->dirents)
        sink->dirents(sink->user, d->ents, d->n_ents);
    d->n_ents = 0;
    d->names_used = 0;
    return rc;
}
