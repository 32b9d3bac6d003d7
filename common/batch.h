/* The record batch: the unit a producer builds, the broker stores and a
 * consumer reads, byte-identical on the wire and on disk. The layout is
 * written out byte by byte at the top of common/batch.c and in
 * docs/storage.md. */
#ifndef KAPPA_COMMON_BATCH_H
#define KAPPA_COMMON_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define KAPPA_BATCH_HEADER_BYTES 64
#define KAPPA_BATCH_MAGIC        1
/* Hard ceiling for one batch; the broker's message.max.bytes is lower. */
#define KAPPA_BATCH_BYTES_MAX (64u * 1024 * 1024)
/* Hard ceiling on records in one batch (bounds decoders). */
#define KAPPA_BATCH_RECORDS_MAX (1u << 24)
/* Byte offsets of the fields the broker rewrites; they are outside the CRC. */
#define KAPPA_BATCH_OFF_BASE_OFFSET 0
#define KAPPA_BATCH_OFF_BYTES       8
#define KAPPA_BATCH_OFF_CRC         12
#define KAPPA_BATCH_OFF_TERM        16
#define KAPPA_BATCH_CRC_START       24

enum kappa_compression {
    KAPPA_COMPRESSION_NONE = 0,
    KAPPA_COMPRESSION_LZ4 = 1,
    KAPPA_COMPRESSION_ZSTD = 2,
};
#define KAPPA_BATCH_ATTR_COMPRESSION_MASK 0x07
/* A control batch carries Raft bookkeeping (consensus/rio: barrier and
 * configuration entries), not producer records: exactly one uncompressed
 * record whose key is the entry type byte and whose value is the entry
 * payload. It takes one offset; consumers skip it. */
#define KAPPA_BATCH_ATTR_CONTROL 0x08

struct batch_header {
    int64_t base_offset;
    uint32_t batch_bytes; /* whole batch, header included */
    uint32_t crc;
    uint64_t term;
    uint8_t magic;
    uint8_t attributes;
    uint32_t record_count;
    int64_t first_timestamp_ms;
    int64_t max_timestamp_ms;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
};

/* Decodes and sanity-checks a header from n >= KAPPA_BATCH_HEADER_BYTES
 * bytes: magic, size bounds, record count, reserved bytes. Does not check
 * the CRC. Returns 0 or KAPPA_ECORRUPT (no log line: callers decide). */
int batch_header_decode(const uint8_t *p, size_t n, struct batch_header *h);

/* Writes all 64 header bytes; crc is written as given. */
void batch_header_encode(const struct batch_header *h, uint8_t *p);

/* CRC-32C over bytes [KAPPA_BATCH_CRC_START, batch_bytes). */
uint32_t batch_crc_compute(const uint8_t *batch, size_t batch_bytes);

/* Decodes the header, checks that n >= batch_bytes and the CRC matches.
 * Returns 0, KAPPA_ECORRUPT (bad header or short) or KAPPA_ECRC. */
int batch_verify(const uint8_t *batch, size_t n, struct batch_header *h);

/* Field rewrites the broker does in place; they leave the CRC valid. */
void batch_set_base_offset(uint8_t *batch, int64_t base_offset);
void batch_set_term(uint8_t *batch, uint64_t term);
int64_t batch_base_offset(const uint8_t *batch);
uint32_t batch_bytes(const uint8_t *batch);

/* Walks a buffer of concatenated batches and checks each (header, CRC, and
 * for uncompressed batches the record framing and count). On success sets
 * *n_batches and *n_records. On failure returns the code and writes a
 * reason into errmsg (KAPPA_ERRMSG_SIZE). max_batch_bytes bounds one
 * batch. */
int batch_validate_all(const uint8_t *p, size_t n, uint32_t max_batch_bytes,
                       uint32_t *n_batches, uint64_t *n_records, char *errmsg);

/* One header of a record, borrowed from the batch's bytes. */
struct record_header {
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *value; /* NULL when the value is null */
    uint32_t value_len;
};

/* One record, borrowed from the batch's (decompressed) bytes. */
struct record_view {
    int64_t offset;
    int64_t timestamp_ms;
    const uint8_t *key; /* NULL when the key is null */
    uint32_t key_len;
    const uint8_t *value; /* NULL when the value is null */
    uint32_t value_len;
    uint32_t n_headers;
    const uint8_t *headers; /* encoded headers, see record_header_next */
    uint32_t headers_bytes;
};

/* Decodes the next header from *p (advancing it) within end. Returns 0 or
 * KAPPA_ECORRUPT. */
int record_header_next(const uint8_t **p, const uint8_t *end,
                       struct record_header *h);

/* Builds one batch record by record (producer side). The buffer starts with
 * room for the header; records are appended uncompressed and the batch is
 * compressed once in batch_builder_finish. No allocation per record once
 * the buffer has grown. */
struct batch_builder {
    struct buf buf;
    struct buf spare; /* compression output, swapped with buf */
    uint32_t record_count;
    int64_t first_timestamp_ms;
    int64_t max_timestamp_ms;
};

void batch_builder_init(struct batch_builder *b);
void batch_builder_free(struct batch_builder *b);
/* Starts a new batch, keeping the allocated buffer. */
void batch_builder_reset(struct batch_builder *b);
/* Bytes the batch would take uncompressed, header included. */
size_t batch_builder_bytes(const struct batch_builder *b);
/* Size one record adds to the batch (exact). */
size_t batch_record_bytes(uint32_t key_len, uint32_t value_len,
                          const struct record_header *headers,
                          uint32_t n_headers, int64_t timestamp_delta,
                          uint32_t offset_delta);

/* Appends a record. key/value may be NULL (null key/value). Returns 0,
 * KAPPA_ENOMEM or KAPPA_ETOOBIG (batch would pass KAPPA_BATCH_BYTES_MAX or
 * KAPPA_BATCH_RECORDS_MAX). */
int batch_builder_add(struct batch_builder *b, const void *key,
                      uint32_t key_len, const void *value, uint32_t value_len,
                      const struct record_header *headers, uint32_t n_headers,
                      int64_t timestamp_ms);

/* Seals the batch: compresses the body if asked (keeping it uncompressed
 * when that is not smaller), fills the header with base offset 0, term 0
 * and the given producer fields, and computes the CRC. The finished batch
 * is b->buf.data[0 .. b->buf.len). Returns 0, KAPPA_EINVAL (empty batch) or
 * KAPPA_ENOMEM / KAPPA_ECOMPRESSION. */
int batch_builder_finish(struct batch_builder *b, int compression,
                         int64_t producer_id, int16_t producer_epoch,
                         int32_t base_sequence);

/* Iterates the records of one verified batch (consumer side). Compressed
 * bodies are decompressed into a scratch buffer owned by the reader and
 * reused for the next batch. */
struct batch_reader {
    struct batch_header header;
    struct buf scratch;
    const uint8_t *pos;
    const uint8_t *end;
    uint32_t records_left;
};

void batch_reader_init(struct batch_reader *r);
void batch_reader_free(struct batch_reader *r);

/* Points the reader at a batch of n bytes (n >= its batch_bytes); verifies
 * header and CRC and decompresses. The batch bytes must stay valid while
 * records are read. Returns 0, KAPPA_ECORRUPT, KAPPA_ECRC or
 * KAPPA_ENOMEM. */
int batch_reader_open(struct batch_reader *r, const uint8_t *batch, size_t n);

/* Decodes the next record. Returns 1 with *rec filled, 0 at the end of the
 * batch, or KAPPA_ECORRUPT. */
int batch_reader_next(struct batch_reader *r, struct record_view *rec);

#endif /* KAPPA_COMMON_BATCH_H */
