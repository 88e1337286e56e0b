/*
 * tunnel_bench.h: what bench_tunnel_upstream sends and bench_tunnel_load
 * checks (tests/bench/tunnel.sh), kept in one place so both agree.
 *
 * Large bodies (GET .../big) are a 64 KiB block repeated: base64-alphabet
 * text in 76-character lines, the shape of a binary resource an MCP server
 * returns as a base64 "blob". It is text the credential scrubber has to look
 * at (its base64 forms use this alphabet), not bytes it could skip. Byte i of
 * a body is tb_block()[i % TB_BLOCK].
 */
#ifndef TUNNEL_BENCH_H
#define TUNNEL_BENCH_H

#include <stddef.h>
#include <stdint.h>

#define TB_BLOCK 65536

/* Fills b[TB_BLOCK] with the block (deterministic: xorshift64 from a fixed seed). */
static inline void tb_fill_block(uint8_t *b)
{
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint64_t x = 0x9e3779b97f4a7c15ULL;

    for (size_t i = 0; i < TB_BLOCK; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[i] = i % 77 == 76 ? '\n' : (uint8_t)alpha[x >> 58];
    }
}

/* Server-sent events of GET .../sse: the first goes out at once, the last
 * when the stream's group is released (POST /release?group=G). */
#define TB_SSE_FIRST                                                                               \
    "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":"           \
    "{\"level\":\"info\",\"data\":\"stream open\"}}\n\n"
#define TB_SSE_LAST                                                                                \
    "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":"           \
    "{\"level\":\"info\",\"data\":\"stream end\"}}\n\n"
#define TB_SSE_END_MARK "stream end"

#endif
