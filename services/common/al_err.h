/*
 * al_err: the one error table of the library.
 *
 * Every library function returns 0 on success or a negative code: either one
 * of AL_ERR_* below or -errno for a failing system call. al_strerror() names
 * both kinds. Codes at or below AL_ERR_FATAL mean the object (connection,
 * session) the call was made on cannot be used any more.
 */
#ifndef AL_ERR_H
#define AL_ERR_H

enum {
    AL_OK = 0,
    /* -1 .. -4095 are reserved for -errno values. */
    AL_ERR_INVAL = -5001,     /* bad argument or malformed input */
    AL_ERR_NOMEM = -5002,     /* allocation failed */
    AL_ERR_TOOBIG = -5003,    /* input over a configured hard cap */
    AL_ERR_PROTO = -5004,     /* peer violated a protocol */
    AL_ERR_TLS = -5005,       /* TLS handshake or record failure */
    AL_ERR_AUTH = -5006,      /* identity missing or not accepted */
    AL_ERR_NOTFOUND = -5007,  /* no such object */
    AL_ERR_EXISTS = -5008,    /* object already exists */
    AL_ERR_CONFIG = -5009,    /* configuration invalid */
    AL_ERR_CRYPTO = -5010,    /* signature or cipher failure */
    AL_ERR_EXPIRED = -5011,   /* outside the validity window */
    AL_ERR_STATE = -5012,     /* call not valid in the object's state */
    AL_ERR_CLOSED = -5013,    /* connection or stream already closed */
    AL_ERR_AGAIN = -5014,     /* would block; try again on the next event */
    AL_ERR_TIMEOUT = -5015,   /* deadline passed */
    AL_ERR_FATAL = -5500,     /* codes <= this leave the object unusable */
    AL_ERR_CONN_FATAL = -5501 /* connection is dead; free it */
};

/* Returns a static, human-readable description of an AL_ERR_* or -errno code. */
const char *al_strerror(int code);

#endif
