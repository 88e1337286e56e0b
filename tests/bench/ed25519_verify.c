/*
 * bench_ed25519_verify: single-thread Ed25519 verify rate of libsodium's
 * crypto_sign_ed25519_verify_detached, the function al_grant_verify() checks
 * grant signatures with, measured the way `openssl speed ed25519` measures
 * OpenSSL's: one key, one signature over a message the size of a grant as
 * signed (domain separator + serialized grant, ~300 bytes), verified again
 * and again for the given number of seconds. tests/bench/credstore.sh runs
 * it on the server's core next to `openssl speed`.
 *
 * Usage: bench_ed25519_verify [SECONDS]   (default 3)
 * Prints one line: "sodium_verify_per_s=<rate> seconds=<s> verifies=<n>".
 * Exit 1 if a verify fails (or a corrupted signature passes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    uint8_t sig[crypto_sign_BYTES], msg[300];
    double secs = argc > 1 ? atof(argv[1]) : 3.0, t0, t;
    unsigned long n = 0;

    if (argc > 2 || secs <= 0 || secs > 600) {
        fprintf(stderr, "usage: bench_ed25519_verify [SECONDS]\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    randombytes_buf(msg, sizeof(msg));
    crypto_sign_keypair(pk, sk);
    crypto_sign_detached(sig, NULL, msg, sizeof(msg), sk);
    sodium_memzero(sk, sizeof(sk));
    sig[7] ^= 1;
    if (crypto_sign_ed25519_verify_detached(sig, msg, sizeof(msg), pk) == 0) {
        fprintf(stderr, "bench_ed25519_verify: a corrupted signature verified\n");
        return 1;
    }
    sig[7] ^= 1;
    t0 = now_s();
    do {
        for (int i = 0; i < 64; i++, n++) {
            if (crypto_sign_ed25519_verify_detached(sig, msg, sizeof(msg), pk) != 0) {
                fprintf(stderr, "bench_ed25519_verify: a good signature failed\n");
                return 1;
            }
        }
        t = now_s() - t0;
    } while (t < secs);
    printf("sodium_verify_per_s=%.1f seconds=%.2f verifies=%lu\n", (double)n / t, t, n);
    return 0;
}
