/* al_err: names for the library's negative error codes. */
#include <string.h>

#include "al_err.h"

const char *al_strerror(int code)
{
    switch (code) {
    case AL_OK:
        return "success";
    case AL_ERR_INVAL:
        return "invalid argument or malformed input";
    case AL_ERR_NOMEM:
        return "out of memory";
    case AL_ERR_TOOBIG:
        return "over the size limit";
    case AL_ERR_PROTO:
        return "protocol error";
    case AL_ERR_TLS:
        return "TLS error";
    case AL_ERR_AUTH:
        return "identity not accepted";
    case AL_ERR_NOTFOUND:
        return "not found";
    case AL_ERR_EXISTS:
        return "already exists";
    case AL_ERR_CONFIG:
        return "invalid configuration";
    case AL_ERR_CRYPTO:
        return "signature or cipher check failed";
    case AL_ERR_EXPIRED:
        return "outside the validity window";
    case AL_ERR_STATE:
        return "not valid in this state";
    case AL_ERR_CLOSED:
        return "closed";
    case AL_ERR_AGAIN:
        return "try again";
    case AL_ERR_TIMEOUT:
        return "deadline exceeded";
    case AL_ERR_CONN_FATAL:
        return "connection failed";
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}
