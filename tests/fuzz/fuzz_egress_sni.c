/*
 * libFuzzer target: the ClientHello check of the egress proxy's tunnels
 * (eg_hello_parse). For every input: the result is one of complete, more,
 * not TLS or malformed; a complete hello names a server only with letters,
 * digits, '-' and '.' (lower case, at most 253 bytes, no trailing dot) and
 * was carried by at most the bytes given; parsing just those bytes gives the
 * same answer; a shorter prefix of a complete hello never claims to be
 * complete with another name. Any violated invariant abort()s.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "al_err.h"
#include "sni.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char sni[EG_SNI_MAX], again[EG_SNI_MAX];
    const char *why = NULL;
    size_t used = 0, used2 = 0;
    int rc = eg_hello_parse(data, size, sni, &used, &why);

    CHECK(rc == 0 || rc == 1 || rc == AL_ERR_PROTO || rc == AL_ERR_INVAL);
    if (rc < 0)
        CHECK(why != NULL && sni[0] == '\0');
    if (rc != 0)
        return 0;
    size_t l = strlen(sni);
    CHECK(used <= size && used > 0 && l <= 253 && (l == 0 || sni[l - 1] != '.'));
    for (size_t i = 0; i < l; i++)
        CHECK((sni[i] >= 'a' && sni[i] <= 'z') || (sni[i] >= '0' && sni[i] <= '9') ||
              sni[i] == '-' || sni[i] == '.');
    CHECK(eg_hello_parse(data, used, again, &used2, &why) == 0);
    CHECK(used2 == used && strcmp(sni, again) == 0);
    if (used > 1) {
        int r2 = eg_hello_parse(data, used - 1, again, &used2, &why);
        CHECK(r2 != 0);
    }
    return 0;
}
