/*
 * libFuzzer target: the gRPC message deframer as the server uses it.
 * The input is cut into DATA-frame-sized chunks (sizes taken from the input
 * itself), reassembled into a capped buffer exactly as al_grpc_server does,
 * and every complete message is unpacked into a capped per-stream arena.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "airlock/test/v1/test.pb-c.h"
#include "al_arena.h"
#include "al_err.h"
#include "al_grpc.h"

#define MAX_MSG 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t buf[MAX_MSG + 5 + 64];
    size_t have = 0;
    struct al_arena arena;

    if (size < 1)
        return 0;
    al_arena_init(&arena, MAX_MSG * 4);
    size_t chunk = (size_t)data[0] % 64 + 1;
    data++;
    size--;
    while (size > 0) {
        size_t n = size < chunk ? size : chunk;
        if (have + n > sizeof(buf))
            break; /* the server fails the call here: cap reached */
        memcpy(buf + have, data, n);
        have += n;
        data += n;
        size -= n;
        for (;;) {
            const uint8_t *msg;
            size_t len;
            int compressed;
            long used = al_grpc_frame_next(buf, have, MAX_MSG, &msg, &len, &compressed);
            if (used <= 0) {
                if (used < 0)
                    goto out;
                break;
            }
            ProtobufCMessage *m = protobuf_c_message_unpack(
                &airlock__test__v1__echo_request__descriptor, al_arena_pb(&arena), len, msg);
            (void)m;
            memmove(buf, buf + used, have - (size_t)used);
            have -= (size_t)used;
        }
    }
out:
    al_arena_cleanup(&arena);
    return 0;
}
