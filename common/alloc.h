/* Allocation goes through here so tests can fail the Nth allocation. */
#ifndef KAPPA_COMMON_ALLOC_H
#define KAPPA_COMMON_ALLOC_H

#include <stddef.h>

void *kappa_malloc(size_t size);
void *kappa_calloc(size_t n, size_t size);
void *kappa_realloc(void *ptr, size_t size);
void kappa_free(void *ptr);
char *kappa_strdup(const char *s);

/* Test hook: the allocation numbered fail_at (1-based, counted from this
 * call) and every one after it fail; 0 disables. */
void kappa_alloc_fail_after(long fail_at);

#endif /* KAPPA_COMMON_ALLOC_H */
