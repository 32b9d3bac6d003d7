/* A growable byte buffer with an explicit cap, used for frames and batches. */
#ifndef KAPPA_COMMON_BUF_H
#define KAPPA_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Zero-initialised struct buf is a valid empty buffer. */
void buf_init(struct buf *b);
void buf_free(struct buf *b);

/* Ensures room for `extra` more bytes past len. Returns KAPPA_ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);

/* Appends bytes; returns KAPPA_ENOMEM on failure (b unchanged). */
int buf_append(struct buf *b, const void *data, size_t n);

/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* Hands the storage to the caller (who frees it with kappa_free) and leaves
 * b empty. */
uint8_t *buf_steal(struct buf *b);

#endif /* KAPPA_COMMON_BUF_H */
