#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static long alloc_fail_at;
static long alloc_count;

static int should_fail(void)
{
    if (alloc_fail_at == 0) {
        return 0;
    }
    alloc_count++;
    return alloc_count >= alloc_fail_at;
}

void kappa_alloc_fail_after(long fail_at)
{
    alloc_fail_at = fail_at;
    alloc_count = 0;
}

void *kappa_malloc(size_t size)
{
    return should_fail() ? NULL : malloc(size);
}

void *kappa_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : calloc(n, size);
}

void *kappa_realloc(void *ptr, size_t size)
{
    return should_fail() ? NULL : realloc(ptr, size);
}

void kappa_free(void *ptr)
{
    free(ptr);
}

char *kappa_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = kappa_malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}
