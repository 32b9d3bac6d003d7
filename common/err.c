#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

const char *kappa_err_str(int code)
{
    switch (code) {
#define X(name, number, retriable, msg)                                        \
    case number:                                                               \
        return msg;
        KAPPA_ERR_MAP(X)
#undef X
    }
    return "unknown error";
}

const char *kappa_err_name(int code)
{
    switch (code) {
#define X(name, number, retriable, msg)                                        \
    case number:                                                               \
        return #name;
        KAPPA_ERR_MAP(X)
#undef X
    }
    return "EUNKNOWN";
}

int kappa_err_is_retriable(int code)
{
    switch (code) {
#define X(name, number, retriable, msg)                                        \
    case number:                                                               \
        return retriable;
        KAPPA_ERR_MAP(X)
#undef X
    }
    return 0;
}

void kappa_errmsg_printf(char *errmsg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, KAPPA_ERRMSG_SIZE, fmt, ap);
    va_end(ap);
}

void kappa_errmsg_wrap(char *errmsg, const char *fmt, ...)
{
    char old[KAPPA_ERRMSG_SIZE];
    char prefix[KAPPA_ERRMSG_SIZE];
    va_list ap;

    memcpy(old, errmsg, sizeof old);
    old[sizeof old - 1] = '\0';
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Truncation keeps the outermost context, which matters most. */
    size_t n = strnlen(prefix, sizeof prefix - 1);
    memcpy(errmsg, prefix, n);
    if (n + 2 < KAPPA_ERRMSG_SIZE) {
        errmsg[n++] = ':';
        errmsg[n++] = ' ';
    }
    size_t rest = strnlen(old, sizeof old - 1);
    if (rest > KAPPA_ERRMSG_SIZE - 1 - n) {
        rest = KAPPA_ERRMSG_SIZE - 1 - n;
    }
    memcpy(errmsg + n, old, rest);
    errmsg[n + rest] = '\0';
}

int kappa_err_from_errno(int errnum)
{
    switch (errnum) {
    case 0:
        return KAPPA_OK;
    case ENOMEM:
        return KAPPA_ENOMEM;
    case ENOSPC:
    case EDQUOT:
        return KAPPA_ENOSPC;
    case ENOENT:
        return KAPPA_ENOENT;
    case EINVAL:
        return KAPPA_EINVAL;
    case ETIMEDOUT:
        return KAPPA_ETIMEDOUT;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
        return KAPPA_ETRANSPORT;
    default:
        return KAPPA_EIO;
    }
}

int kappa_corrupt_at(const char *file, int line)
{
    kappa_log(KAPPA_LOG_ERROR, "store", "corruption detected at %s:%d", file,
              line);
    return KAPPA_ECORRUPT;
}
