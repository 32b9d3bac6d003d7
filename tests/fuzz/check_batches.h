/* Shared by the fuzz targets: runs batch_validate_all and the batch reader
 * over the same bytes and aborts when either misbehaves or when the two
 * disagree about an uncompressed batch. */
#ifndef KAPPA_FUZZ_CHECK_BATCHES_H
#define KAPPA_FUZZ_CHECK_BATCHES_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/batch.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/err.h"

/* Batches here stay small: the fuzzer's inputs are at most 64 KiB. */
#define FUZZ_BATCH_BYTES_MAX (1u << 20)

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Keeps the compiler from dropping the reads that make ASan look. */
static volatile uint32_t fuzz_sink;

static void touch(const uint8_t *p, uint32_t n)
{
    if (p != NULL) {
        fuzz_sink ^= crc32c(p, n);
    } else {
        FUZZ_CHECK(n == 0);
    }
}

static void check_record(const struct batch_header *h,
                         const struct record_view *v, uint32_t index)
{
    const uint8_t *p = v->headers;
    const uint8_t *end = v->headers + v->headers_bytes;

    FUZZ_CHECK(v->offset == h->base_offset + (int64_t)index);
    touch(v->key, v->key_len);
    touch(v->value, v->value_len);
    /* record_decode already walked the headers, so these cannot fail. */
    for (uint32_t i = 0; i < v->n_headers; i++) {
        struct record_header rh;
        FUZZ_CHECK(record_header_next(&p, end, &rh) == 0);
        touch(rh.key, rh.key_len);
        touch(rh.value, rh.value_len);
    }
    FUZZ_CHECK(p == end);
}

/* Opens and reads one batch. Returns 0 after a clean end or the error;
 * *opened says whether batch_reader_open succeeded. */
static int read_batch(struct batch_reader *r, const uint8_t *p, size_t n,
                      int *opened, uint32_t *n_read)
{
    struct record_view v;
    int rv = batch_reader_open(r, p, n);
    *opened = rv == 0;
    *n_read = 0;
    if (rv != 0) {
        FUZZ_CHECK(rv == KAPPA_ECORRUPT || rv == KAPPA_ECRC ||
                   rv == KAPPA_ENOMEM);
        return rv;
    }
    while ((rv = batch_reader_next(r, &v)) == 1) {
        FUZZ_CHECK(*n_read < r->header.record_count);
        check_record(&r->header, &v, *n_read);
        (*n_read)++;
    }
    FUZZ_CHECK(rv == 0 || rv == KAPPA_ECORRUPT);
    FUZZ_CHECK(batch_reader_next(r, &v) == rv); /* errors stay */
    if (rv == 0) {
        FUZZ_CHECK(*n_read == r->header.record_count);
    }
    return rv;
}

static void check_batches(const uint8_t *p, size_t n)
{
    struct batch_reader r;
    char errmsg[KAPPA_ERRMSG_SIZE];
    uint32_t n_batches = 0, batches_read = 0;
    uint64_t n_records = 0, records_read = 0;
    size_t pos = 0;
    int all_clean = n > 0;
    int valid = batch_validate_all(p, n, FUZZ_BATCH_BYTES_MAX, &n_batches,
                                   &n_records, errmsg);

    FUZZ_CHECK(valid == 0 || valid == KAPPA_EINVAL || valid == KAPPA_ECORRUPT ||
               valid == KAPPA_ECRC || valid == KAPPA_ETOOBIG);
    FUZZ_CHECK(valid != KAPPA_EINVAL || n == 0);
    if (valid != 0) {
        FUZZ_CHECK(memchr(errmsg, '\0', sizeof errmsg) != NULL);
    }

    batch_reader_init(&r);
    while (pos < n) {
        struct batch_header h;
        uint32_t n_read;
        int opened;
        int rv = read_batch(&r, p + pos, n - pos, &opened, &n_read);
        int has_header = batch_header_decode(p + pos, n - pos, &h) == 0 &&
                         h.batch_bytes <= n - pos;
        int is_compressed =
            has_header && (h.attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK);

        if (valid == 0) {
            /* validate_all checked header and CRC, and every record of an
             * uncompressed batch: the reader can only find trouble inside
             * compressed bodies. */
            FUZZ_CHECK(has_header);
            FUZZ_CHECK(rv == 0 || (is_compressed && rv == KAPPA_ECORRUPT));
        }
        if (opened) {
            FUZZ_CHECK(has_header);
            FUZZ_CHECK(h.base_offset == r.header.base_offset);
            FUZZ_CHECK(h.batch_bytes == r.header.batch_bytes);
            FUZZ_CHECK(h.attributes == r.header.attributes);
            FUZZ_CHECK(h.record_count == r.header.record_count);
        }
        if (rv != 0 || h.batch_bytes > FUZZ_BATCH_BYTES_MAX) {
            all_clean = 0;
        }
        if (!has_header) {
            break;
        }
        batches_read++;
        records_read += n_read;
        pos += h.batch_bytes;
    }
    if (all_clean && pos == n) {
        /* The reader found nothing wrong anywhere: validate_all agrees. */
        FUZZ_CHECK(valid == 0);
        FUZZ_CHECK(batches_read == n_batches);
        FUZZ_CHECK(records_read == n_records);
    }
    batch_reader_free(&r);
}

/* Rewrites each batch's CRC so the fuzzer reaches the record decoders
 * without having to learn CRC-32C. */
static void fix_crcs(uint8_t *p, size_t n)
{
    size_t pos = 0;
    while (n - pos >= KAPPA_BATCH_HEADER_BYTES) {
        uint32_t bytes = batch_bytes(p + pos);
        if (bytes <= KAPPA_BATCH_HEADER_BYTES || bytes > n - pos) {
            return;
        }
        le32_put(p + pos + KAPPA_BATCH_OFF_CRC,
                 batch_crc_compute(p + pos, bytes));
        pos += bytes;
    }
}

/* Checks the bytes as given and again with valid CRCs, each time from an
 * exactly sized copy so that any overread is caught. */
static void check_batches_both(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n);
    if (n > 0 && copy == NULL) {
        return;
    }
    if (n > 0) {
        memcpy(copy, p, n);
    }
    check_batches(copy, n);
    fix_crcs(copy, n);
    check_batches(copy, n);
    free(copy);
}

#endif /* KAPPA_FUZZ_CHECK_BATCHES_H */
