/*
 * The record batch format. A batch is the unit the producer builds, the
 * broker validates and stores, and the consumer reads; the same bytes are
 * on the wire and on disk. All fixed-width integers are little-endian.
 *
 *   offset size field
 *   0      8    base_offset      i64  offset of the first record; the broker
 *                                     assigns it by rewriting these bytes
 *   8      4    batch_bytes      u32  length of the whole batch, header
 *                                     included (64 .. 64 MiB)
 *   12     4    crc              u32  CRC-32C of bytes [24, batch_bytes)
 *   16     8    term             u64  Raft term of the leader that appended
 *                                     it (0 on a single node); rewritten by
 *                                     the broker like base_offset
 *   24     1    magic            u8   1
 *   25     1    attributes       u8   bits 0-2: compression (0 none, 1 lz4,
 *                                     2 zstd); bit 3: control batch;
 *                                     bits 4-7: zero
 *   26     2    reserved         u16  zero
 *   28     4    record_count     u32  1 .. 2^24
 *   32     8    first_timestamp  i64  ms since the epoch of the first record
 *   40     8    max_timestamp    i64  largest record timestamp
 *   48     8    producer_id      i64  -1 when not idempotent
 *   56     2    producer_epoch   i16  -1 when not idempotent
 *   58     2    reserved         u16  zero
 *   60     4    base_sequence    i32  -1 when not idempotent
 *   64     ...  body             records, or compressed records
 *
 * The CRC starts at byte 24, after base_offset, batch_bytes, crc and term, so
 * the broker can assign base_offset and term without recomputing it, as
 * Kafka does with its partition leader epoch. batch_bytes is protected by
 * the CRC check itself: a wrong length makes the CRC range wrong.
 *
 * A control batch (attribute bit 3, written by consensus/rio for Raft
 * barrier and configuration entries) is uncompressed and holds exactly one
 * record: key = the Raft entry type (one byte: 2 barrier, 3 configuration),
 * value = the entry payload (empty for a barrier), timestamp 0, producer
 * fields -1. It takes one offset like any record; consumers skip it.
 *
 * An uncompressed body is record_count records back to back. A compressed
 * body is a u32 uncompressed length (at most 64 MiB) followed by one LZ4
 * block (LZ4_compress_default) or one zstd frame holding those records.
 *
 * A record (varint = unsigned LEB128; svarint = zigzag LEB128):
 *
 *   varint  length            bytes of the record after this field
 *   u8      attributes        zero
 *   svarint timestamp_delta   timestamp - first_timestamp (mod 2^64)
 *   varint  offset_delta      offset - base_offset (0, 1, 2, ...)
 *   svarint key_length        -1 for a null key
 *   bytes   key
 *   svarint value_length      -1 for a null value
 *   bytes   value
 *   varint  header_count
 *   header_count times:
 *     varint  header_key_length
 *     bytes   header_key
 *     svarint header_value_length   -1 for a null value
 *     bytes   header_value
 */
#include "batch.h"

#include <lz4.h>
#include <string.h>
#include <zstd.h>

#include "alloc.h"
#include "crc32c.h"
#include "endian.h"
#include "err.h"
#include "varint.h"

_Static_assert(KAPPA_BATCH_CRC_START == 24, "crc range starts after term");
_Static_assert(KAPPA_BATCH_HEADER_BYTES == 64, "header is 64 bytes");

#define ZSTD_LEVEL 1

int batch_header_decode(const uint8_t *p, size_t n, struct batch_header *h)
{
    if (n < KAPPA_BATCH_HEADER_BYTES) {
        return KAPPA_ECORRUPT;
    }
    h->base_offset = (int64_t)le64_get(p);
    h->batch_bytes = le32_get(p + 8);
    h->crc = le32_get(p + 12);
    h->term = le64_get(p + 16);
    h->magic = p[24];
    h->attributes = p[25];
    h->record_count = le32_get(p + 28);
    h->first_timestamp_ms = (int64_t)le64_get(p + 32);
    h->max_timestamp_ms = (int64_t)le64_get(p + 40);
    h->producer_id = (int64_t)le64_get(p + 48);
    h->producer_epoch = (int16_t)le16_get(p + 56);
    h->base_sequence = (int32_t)le32_get(p + 60);
    if (h->magic != KAPPA_BATCH_MAGIC || le16_get(p + 26) != 0 ||
        le16_get(p + 58) != 0) {
        return KAPPA_ECORRUPT;
    }
    if ((h->attributes & ~(KAPPA_BATCH_ATTR_COMPRESSION_MASK |
                           KAPPA_BATCH_ATTR_CONTROL)) != 0 ||
        (h->attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) >
            KAPPA_COMPRESSION_ZSTD) {
        return KAPPA_ECORRUPT;
    }
    /* A control batch is one uncompressed record (see the top). */
    if ((h->attributes & KAPPA_BATCH_ATTR_CONTROL) != 0 &&
        (h->attributes != KAPPA_BATCH_ATTR_CONTROL || h->record_count != 1)) {
        return KAPPA_ECORRUPT;
    }
    if (h->batch_bytes <= KAPPA_BATCH_HEADER_BYTES ||
        h->batch_bytes > KAPPA_BATCH_BYTES_MAX) {
        return KAPPA_ECORRUPT;
    }
    if (h->record_count == 0 || h->record_count > KAPPA_BATCH_RECORDS_MAX ||
        h->base_offset < 0) {
        return KAPPA_ECORRUPT;
    }
    /* The last record's offset, base_offset + record_count - 1, must fit. */
    if (h->base_offset > INT64_MAX - (int64_t)(h->record_count - 1)) {
        return KAPPA_ECORRUPT;
    }
    return 0;
}

void batch_header_encode(const struct batch_header *h, uint8_t *p)
{
    le64_put(p, (uint64_t)h->base_offset);
    le32_put(p + 8, h->batch_bytes);
    le32_put(p + 12, h->crc);
    le64_put(p + 16, h->term);
    p[24] = h->magic;
    p[25] = h->attributes;
    le16_put(p + 26, 0);
    le32_put(p + 28, h->record_count);
    le64_put(p + 32, (uint64_t)h->first_timestamp_ms);
    le64_put(p + 40, (uint64_t)h->max_timestamp_ms);
    le64_put(p + 48, (uint64_t)h->producer_id);
    le16_put(p + 56, (uint16_t)h->producer_epoch);
    le16_put(p + 58, 0);
    le32_put(p + 60, (uint32_t)h->base_sequence);
}

uint32_t batch_crc_compute(const uint8_t *batch, size_t n)
{
    return crc32c(batch + KAPPA_BATCH_CRC_START, n - KAPPA_BATCH_CRC_START);
}

int batch_verify(const uint8_t *batch, size_t n, struct batch_header *h)
{
    int rv = batch_header_decode(batch, n, h);
    if (rv != 0) {
        return rv;
    }
    if (h->batch_bytes > n) {
        return KAPPA_ECORRUPT;
    }
    if (batch_crc_compute(batch, h->batch_bytes) != h->crc) {
        return KAPPA_ECRC;
    }
    return 0;
}

void batch_set_base_offset(uint8_t *batch, int64_t base_offset)
{
    le64_put(batch + KAPPA_BATCH_OFF_BASE_OFFSET, (uint64_t)base_offset);
}

void batch_set_term(uint8_t *batch, uint64_t term)
{
    le64_put(batch + KAPPA_BATCH_OFF_TERM, term);
}

int64_t batch_base_offset(const uint8_t *batch)
{
    return (int64_t)le64_get(batch + KAPPA_BATCH_OFF_BASE_OFFSET);
}

uint32_t batch_bytes(const uint8_t *batch)
{
    return le32_get(batch + KAPPA_BATCH_OFF_BYTES);
}

/* Reads a length-prefixed byte string whose length may be -1 (null). */
static int get_nullable_bytes(const uint8_t **p, const uint8_t *end,
                              const uint8_t **data, uint32_t *len)
{
    int64_t n;
    if (svarint_get(p, end, &n) != 0 || n < -1 || n > end - *p) {
        return KAPPA_ECORRUPT;
    }
    if (n == -1) {
        *data = NULL;
        *len = 0;
        return 0;
    }
    *data = *p;
    *len = (uint32_t)n;
    *p += n;
    return 0;
}

int record_header_next(const uint8_t **p, const uint8_t *end,
                       struct record_header *h)
{
    uint64_t key_len;
    if (uvarint_get(p, end, &key_len) != 0 || key_len > (uint64_t)(end - *p)) {
        return KAPPA_ECORRUPT;
    }
    h->key = *p;
    h->key_len = (uint32_t)key_len;
    *p += key_len;
    return get_nullable_bytes(p, end, &h->value, &h->value_len);
}

/* Timestamps are stored as deltas from first_timestamp computed modulo 2^64,
 * so any pair of int64 timestamps round-trips and hostile deltas cannot
 * overflow a signed add. */
static int64_t ts_delta_of(int64_t timestamp_ms, int64_t first_ms)
{
    return (int64_t)((uint64_t)timestamp_ms - (uint64_t)first_ms);
}

static int64_t ts_from_delta(int64_t first_ms, int64_t delta)
{
    return (int64_t)((uint64_t)first_ms + (uint64_t)delta);
}

/* Decodes record number `index` at *p; it must end exactly where its length
 * prefix says, with zero attributes and offset_delta == index. */
static int record_decode(const uint8_t **p, const uint8_t *end,
                         const struct batch_header *h, uint32_t index,
                         struct record_view *rec)
{
    uint64_t len, offset_delta, n_headers;
    int64_t ts_delta;
    const uint8_t *q = *p;
    const uint8_t *rec_end;

    if (uvarint_get(&q, end, &len) != 0 || len > (uint64_t)(end - q) ||
        len < 1) {
        return KAPPA_ECORRUPT;
    }
    rec_end = q + len;
    if (*q++ != 0) { /* attributes */
        return KAPPA_ECORRUPT;
    }
    /* Offsets are assigned as base_offset + 0, 1, 2, ...: a gap or a repeat
     * would give consumers duplicate or missing offsets. */
    if (svarint_get(&q, rec_end, &ts_delta) != 0 ||
        uvarint_get(&q, rec_end, &offset_delta) != 0 || offset_delta != index) {
        return KAPPA_ECORRUPT;
    }
    if (get_nullable_bytes(&q, rec_end, &rec->key, &rec->key_len) != 0 ||
        get_nullable_bytes(&q, rec_end, &rec->value, &rec->value_len) != 0 ||
        uvarint_get(&q, rec_end, &n_headers) != 0 ||
        n_headers > (uint64_t)(rec_end - q)) {
        return KAPPA_ECORRUPT;
    }
    rec->offset = h->base_offset + (int64_t)offset_delta;
    rec->timestamp_ms = ts_from_delta(h->first_timestamp_ms, ts_delta);
    rec->n_headers = (uint32_t)n_headers;
    rec->headers = q;
    rec->headers_bytes = (uint32_t)(rec_end - q);
    for (uint64_t i = 0; i < n_headers; i++) {
        struct record_header hdr;
        if (record_header_next(&q, rec_end, &hdr) != 0) {
            return KAPPA_ECORRUPT;
        }
    }
    if (q != rec_end) {
        return KAPPA_ECORRUPT;
    }
    *p = rec_end;
    return 0;
}

static int validate_records(const uint8_t *body, const uint8_t *end,
                            const struct batch_header *h)
{
    struct record_view rec;
    for (uint32_t i = 0; i < h->record_count; i++) {
        if (record_decode(&body, end, h, i, &rec) != 0) {
            return KAPPA_ECORRUPT;
        }
    }
    return body == end ? 0 : KAPPA_ECORRUPT;
}

int batch_validate_all(const uint8_t *p, size_t n, uint32_t max_batch_bytes,
                       uint32_t *n_batches, uint64_t *n_records, char *errmsg)
{
    size_t pos = 0;
    *n_batches = 0;
    *n_records = 0;
    if (n == 0) {
        kappa_errmsg_printf(errmsg, "no record batch");
        return KAPPA_EINVAL;
    }
    while (pos < n) {
        struct batch_header h;
        const uint8_t *b = p + pos;
        int rv = batch_header_decode(b, n - pos, &h);
        if (rv != 0) {
            kappa_errmsg_printf(errmsg, "batch %u: bad header", *n_batches);
            return KAPPA_ECORRUPT;
        }
        if (h.batch_bytes > max_batch_bytes) {
            kappa_errmsg_printf(errmsg, "batch %u: %u bytes exceeds limit %u",
                                *n_batches, h.batch_bytes, max_batch_bytes);
            return KAPPA_ETOOBIG;
        }
        rv = batch_verify(b, n - pos, &h);
        if (rv != 0) {
            kappa_errmsg_printf(errmsg, "batch %u: %s", *n_batches,
                                rv == KAPPA_ECRC ? "crc mismatch"
                                                 : "truncated batch");
            return rv;
        }
        if ((h.attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) == 0 &&
            validate_records(b + KAPPA_BATCH_HEADER_BYTES, b + h.batch_bytes,
                             &h) != 0) {
            kappa_errmsg_printf(errmsg, "batch %u: malformed records",
                                *n_batches);
            return KAPPA_ECORRUPT;
        }
        pos += h.batch_bytes;
        (*n_batches)++;
        *n_records += h.record_count;
    }
    return 0;
}

void batch_builder_init(struct batch_builder *b)
{
    buf_init(&b->buf);
    buf_init(&b->spare);
    batch_builder_reset(b);
}

void batch_builder_free(struct batch_builder *b)
{
    buf_free(&b->buf);
    buf_free(&b->spare);
}

void batch_builder_reset(struct batch_builder *b)
{
    b->buf.len = 0;
    b->record_count = 0;
    b->first_timestamp_ms = 0;
    b->max_timestamp_ms = 0;
}

size_t batch_builder_bytes(const struct batch_builder *b)
{
    return b->record_count == 0 ? KAPPA_BATCH_HEADER_BYTES : b->buf.len;
}

static size_t nullable_size(const void *data, uint32_t len)
{
    return data == NULL ? 1 : svarint_size(len) + len;
}

static size_t record_body_size(uint32_t key_len, uint32_t value_len,
                               int key_null, int value_null,
                               const struct record_header *headers,
                               uint32_t n_headers, int64_t ts_delta,
                               uint32_t offset_delta)
{
    size_t n = 1 + svarint_size(ts_delta) + uvarint_size(offset_delta);
    n += key_null ? 1 : svarint_size(key_len) + key_len;
    n += value_null ? 1 : svarint_size(value_len) + value_len;
    n += uvarint_size(n_headers);
    for (uint32_t i = 0; i < n_headers; i++) {
        n += uvarint_size(headers[i].key_len) + headers[i].key_len;
        n += nullable_size(headers[i].value, headers[i].value_len);
    }
    return n;
}

size_t batch_record_bytes(uint32_t key_len, uint32_t value_len,
                          const struct record_header *headers,
                          uint32_t n_headers, int64_t timestamp_delta,
                          uint32_t offset_delta)
{
    size_t body = record_body_size(key_len, value_len, 0, 0, headers, n_headers,
                                   timestamp_delta, offset_delta);
    return uvarint_size(body) + body;
}

static uint8_t *put_nullable(uint8_t *p, const void *data, uint32_t len)
{
    if (data == NULL) {
        return p + svarint_put(p, -1);
    }
    p += svarint_put(p, len);
    memcpy(p, data, len);
    return p + len;
}

int batch_builder_add(struct batch_builder *b, const void *key,
                      uint32_t key_len, const void *value, uint32_t value_len,
                      const struct record_header *headers, uint32_t n_headers,
                      int64_t timestamp_ms)
{
    int64_t ts_delta;
    size_t body, total;
    uint8_t *p;

    if (b->record_count == 0) {
        b->buf.len = KAPPA_BATCH_HEADER_BYTES;
        b->first_timestamp_ms = timestamp_ms;
        b->max_timestamp_ms = timestamp_ms;
    }
    ts_delta = ts_delta_of(timestamp_ms, b->first_timestamp_ms);
    body = record_body_size(key_len, value_len, key == NULL, value == NULL,
                            headers, n_headers, ts_delta, b->record_count);
    total = uvarint_size(body) + body;
    if (b->record_count >= KAPPA_BATCH_RECORDS_MAX ||
        total > KAPPA_BATCH_BYTES_MAX - b->buf.len) {
        return KAPPA_ETOOBIG;
    }
    if (buf_reserve(&b->buf, total) != 0) {
        return KAPPA_ENOMEM;
    }
    p = b->buf.data + b->buf.len;
    p += uvarint_put(p, body);
    *p++ = 0;
    p += svarint_put(p, ts_delta);
    p += uvarint_put(p, b->record_count);
    p = put_nullable(p, key, key_len);
    p = put_nullable(p, value, value_len);
    p += uvarint_put(p, n_headers);
    for (uint32_t i = 0; i < n_headers; i++) {
        p += uvarint_put(p, headers[i].key_len);
        memcpy(p, headers[i].key, headers[i].key_len);
        p += headers[i].key_len;
        p = put_nullable(p, headers[i].value, headers[i].value_len);
    }
    b->buf.len += total;
    b->record_count++;
    if (timestamp_ms > b->max_timestamp_ms) {
        b->max_timestamp_ms = timestamp_ms;
    }
    return 0;
}

/* Compresses the body into b->spare; returns 1 when it did not shrink. */
static int compress_body(struct batch_builder *b, int compression)
{
    const uint8_t *body = b->buf.data + KAPPA_BATCH_HEADER_BYTES;
    size_t body_len = b->buf.len - KAPPA_BATCH_HEADER_BYTES;
    size_t bound, out_len;
    uint8_t *out;

    bound = compression == KAPPA_COMPRESSION_LZ4
                ? (size_t)LZ4_compressBound((int)body_len)
                : ZSTD_compressBound(body_len);
    b->spare.len = 0;
    if (buf_reserve(&b->spare, KAPPA_BATCH_HEADER_BYTES + 4 + bound) != 0) {
        return KAPPA_ENOMEM;
    }
    out = b->spare.data + KAPPA_BATCH_HEADER_BYTES;
    le32_put(out, (uint32_t)body_len);
    if (compression == KAPPA_COMPRESSION_LZ4) {
        int n = LZ4_compress_default((const char *)body, (char *)out + 4,
                                     (int)body_len, (int)bound);
        if (n <= 0) {
            return KAPPA_ECOMPRESSION;
        }
        out_len = (size_t)n;
    } else {
        out_len = ZSTD_compress(out + 4, bound, body, body_len, ZSTD_LEVEL);
        if (ZSTD_isError(out_len)) {
            return KAPPA_ECOMPRESSION;
        }
    }
    if (4 + out_len >= body_len) {
        return 1;
    }
    b->spare.len = KAPPA_BATCH_HEADER_BYTES + 4 + out_len;
    return 0;
}

int batch_builder_finish(struct batch_builder *b, int compression,
                         int64_t producer_id, int16_t producer_epoch,
                         int32_t base_sequence)
{
    struct batch_header h;
    int attributes = KAPPA_COMPRESSION_NONE;

    if (b->record_count == 0) {
        return KAPPA_EINVAL;
    }
    if (compression == KAPPA_COMPRESSION_LZ4 ||
        compression == KAPPA_COMPRESSION_ZSTD) {
        int rv = compress_body(b, compression);
        if (rv < 0 || rv > 1) {
            return rv;
        }
        if (rv == 0) {
            struct buf tmp = b->buf;
            b->buf = b->spare;
            b->spare = tmp;
            attributes = compression;
        }
    } else if (compression != KAPPA_COMPRESSION_NONE) {
        return KAPPA_EINVAL;
    }
    h.base_offset = 0;
    h.batch_bytes = (uint32_t)b->buf.len;
    h.crc = 0;
    h.term = 0;
    h.magic = KAPPA_BATCH_MAGIC;
    h.attributes = (uint8_t)attributes;
    h.record_count = b->record_count;
    h.first_timestamp_ms = b->first_timestamp_ms;
    h.max_timestamp_ms = b->max_timestamp_ms;
    h.producer_id = producer_id;
    h.producer_epoch = producer_epoch;
    h.base_sequence = base_sequence;
    batch_header_encode(&h, b->buf.data);
    le32_put(b->buf.data + KAPPA_BATCH_OFF_CRC,
             batch_crc_compute(b->buf.data, b->buf.len));
    return 0;
}

void batch_reader_init(struct batch_reader *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->scratch);
}

void batch_reader_free(struct batch_reader *r)
{
    buf_free(&r->scratch);
}

static int decompress_body(struct batch_reader *r, const uint8_t *body,
                           size_t body_len)
{
    uint32_t raw_len;
    int codec = r->header.attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK;

    if (body_len < 4) {
        return KAPPA_ECORRUPT;
    }
    raw_len = le32_get(body);
    /* At least one record, so never empty. */
    if (raw_len == 0 || raw_len > KAPPA_BATCH_BYTES_MAX) {
        return KAPPA_ECORRUPT;
    }
    r->scratch.len = 0;
    if (buf_reserve(&r->scratch, raw_len) != 0) {
        return KAPPA_ENOMEM;
    }
    if (codec == KAPPA_COMPRESSION_LZ4) {
        int n =
            LZ4_decompress_safe((const char *)body + 4, (char *)r->scratch.data,
                                (int)body_len - 4, (int)raw_len);
        if (n < 0 || (uint32_t)n != raw_len) {
            return KAPPA_ECORRUPT;
        }
    } else {
        size_t n =
            ZSTD_decompress(r->scratch.data, raw_len, body + 4, body_len - 4);
        if (ZSTD_isError(n) || n != raw_len) {
            return KAPPA_ECORRUPT;
        }
    }
    r->pos = r->scratch.data;
    r->end = r->scratch.data + raw_len;
    return 0;
}

int batch_reader_open(struct batch_reader *r, const uint8_t *batch, size_t n)
{
    int rv;
    r->records_left = 0;
    r->pos = NULL;
    r->end = NULL;
    rv = batch_verify(batch, n, &r->header);
    if (rv != 0) {
        return rv;
    }
    r->records_left = r->header.record_count;
    if ((r->header.attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) == 0) {
        r->pos = batch + KAPPA_BATCH_HEADER_BYTES;
        r->end = batch + r->header.batch_bytes;
        return 0;
    }
    rv = decompress_body(r, batch + KAPPA_BATCH_HEADER_BYTES,
                         r->header.batch_bytes - KAPPA_BATCH_HEADER_BYTES);
    if (rv != 0) {
        r->records_left = 0;
        r->pos = NULL;
        r->end = NULL;
    }
    return rv;
}

int batch_reader_next(struct batch_reader *r, struct record_view *rec)
{
    uint32_t index;
    /* Bytes left over after record_count records mean the count or the
     * framing is wrong; validate_all never sees inside compressed bodies, so
     * this is the only check for them. The error repeats on later calls. */
    if (r->records_left == 0) {
        return r->pos == r->end ? 0 : KAPPA_ECORRUPT;
    }
    index = r->header.record_count - r->records_left;
    if (record_decode(&r->pos, r->end, &r->header, index, rec) != 0) {
        r->records_left = 0;
        r->end = NULL; /* keeps reporting the error */
        return KAPPA_ECORRUPT;
    }
    r->records_left--;
    return 1;
}
