/* Error helpers: the code table lives in include/kappa/errors.h. */
#ifndef KAPPA_COMMON_ERR_H
#define KAPPA_COMMON_ERR_H

#include <kappa/errors.h>
#include <stddef.h>

#define KAPPA_ERRMSG_SIZE 256

/* Formats into an errmsg buffer of KAPPA_ERRMSG_SIZE bytes. */
void kappa_errmsg_printf(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prepends context: "CONTEXT: old message". */
void kappa_errmsg_wrap(char *errmsg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Maps an errno value to the closest KAPPA_E* code. */
int kappa_err_from_errno(int errnum);

/* Reports corruption found in data from disk at the call site and returns
 * KAPPA_ECORRUPT (SQLite's SQLITE_CORRUPT_BKPT). */
int kappa_corrupt_at(const char *file, int line);
#define KAPPA_CORRUPT() kappa_corrupt_at(__FILE__, __LINE__)

#endif /* KAPPA_COMMON_ERR_H */
