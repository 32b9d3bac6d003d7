/* CRC-32C (Castagnoli), hardware-accelerated on x86-64 with SSE4.2. */
#ifndef KAPPA_COMMON_CRC32C_H
#define KAPPA_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (start with 0) over n bytes. crc32c("123456789") ==
 * 0xE3069283. */
uint32_t crc32c_extend(uint32_t crc, const void *data, size_t n);

static inline uint32_t crc32c(const void *data, size_t n)
{
    return crc32c_extend(0, data, n);
}

#endif /* KAPPA_COMMON_CRC32C_H */
