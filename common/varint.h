/* LEB128 varints: unsigned for lengths and counts, zigzag for signed values.
 * Decoders are bounded by `end` and reject overlong encodings. */
#ifndef KAPPA_COMMON_VARINT_H
#define KAPPA_COMMON_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define VARINT_BYTES_MAX 10

static inline size_t uvarint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint64_t zigzag_encode(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t zigzag_decode(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline size_t svarint_size(int64_t v)
{
    return uvarint_size(zigzag_encode(v));
}

/* Writes v at p (room for VARINT_BYTES_MAX assumed); returns bytes used. */
static inline size_t uvarint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static inline size_t svarint_put(uint8_t *p, int64_t v)
{
    return uvarint_put(p, zigzag_encode(v));
}

/* Reads a varint from *p, advancing it. Returns 0, or -1 if it runs past end
 * or is longer than 10 bytes. */
static inline int uvarint_get(const uint8_t **p, const uint8_t *end,
                              uint64_t *v)
{
    const uint8_t *q = *p;
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (q >= end) {
            return -1;
        }
        uint8_t byte = *q++;
        /* The 10th byte holds bit 63 only; more would silently wrap. */
        if (shift == 63 && byte > 1) {
            return -1;
        }
        result |= (uint64_t)(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
            *p = q;
            *v = result;
            return 0;
        }
    }
    return -1;
}

static inline int svarint_get(const uint8_t **p, const uint8_t *end, int64_t *v)
{
    uint64_t u;
    if (uvarint_get(p, end, &u) != 0) {
        return -1;
    }
    *v = zigzag_decode(u);
    return 0;
}

#endif /* KAPPA_COMMON_VARINT_H */
