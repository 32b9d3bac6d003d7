/* Invariant checks that stay on in every build; never for network or disk
 * input. */
#ifndef KAPPA_COMMON_ASSERT_H
#define KAPPA_COMMON_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define KAPPA_ASSERT(cond)                                                     \
    do {                                                                       \
        if (!(cond)) {                                                         \
            (void)fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,   \
                          __LINE__, #cond);                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

#ifdef NDEBUG
#define KAPPA_DASSERT(cond) ((void)0)
#else
#define KAPPA_DASSERT(cond) KAPPA_ASSERT(cond)
#endif

/* Defensive branches that should never be taken (SQLite's ALWAYS/NEVER). */
#define ALWAYS(x) (x)
#define NEVER(x)  (x)

#endif /* KAPPA_COMMON_ASSERT_H */
