/* al_id: time-ordered 128-bit identifiers; see al_id.h. */
#include <time.h>

#include <sodium.h>

#include "al_err.h"
#include "al_id.h"

int al_id_new(uint8_t id[AL_ID_LEN])
{
    struct timespec ts;
    uint64_t ms = 0;

    if (sodium_init() < 0) /* once per process; later calls return 1 */
        return AL_ERR_CRYPTO;
    /* before 1970 the time part is 0, past the year 10889 it wraps: either
     * only costs the ordering */
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec >= 0)
        ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (int i = 0; i < 6; i++)
        id[i] = (uint8_t)(ms >> (40 - 8 * i));
    randombytes_buf(id + 6, AL_ID_LEN - 6);
    return 0;
}

int al_id_new_hex(char out[AL_ID_HEX_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    uint8_t id[AL_ID_LEN];
    int rc = al_id_new(id);

    if (rc < 0)
        return rc;
    for (size_t i = 0; i < AL_ID_LEN; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[AL_ID_HEX_LEN] = '\0';
    return 0;
}
