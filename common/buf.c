#include "buf.h"

#include <string.h>

#include "alloc.h"
#include "err.h"

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_free(struct buf *b)
{
    kappa_free(b->data);
    buf_init(b);
}

int buf_reserve(struct buf *b, size_t extra)
{
    size_t need = b->len + extra;
    size_t cap;
    uint8_t *data;

    if (need < b->len) {
        return KAPPA_ENOMEM;
    }
    if (need <= b->cap) {
        return 0;
    }
    cap = b->cap == 0 ? 256 : b->cap;
    while (cap < need) {
        cap = cap * 2 > cap ? cap * 2 : need;
    }
    data = kappa_realloc(b->data, cap);
    if (data == NULL) {
        return KAPPA_ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
    int rv = buf_reserve(b, n);
    if (rv != 0) {
        return rv;
    }
    if (n > 0) {
        memcpy(b->data + b->len, data, n);
    }
    b->len += n;
    return 0;
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

uint8_t *buf_steal(struct buf *b)
{
    uint8_t *data = b->data;
    buf_init(b);
    return data;
}
