/* Unit tests for common/batch: the exact bytes of a small batch, a table of
 * batches built with every compression and read back record by record, a
 * table of invalid batches with the code each must produce, and a loop over
 * every allocation failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/batch.h"
#include "common/buf.h"
#include "common/endian.h"
#include "common/err.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static const int compressions[] = {
    KAPPA_COMPRESSION_NONE,
    KAPPA_COMPRESSION_LZ4,
    KAPPA_COMPRESSION_ZSTD,
};

/* A heap copy of exactly n bytes, so AddressSanitizer sees overreads. */
static uint8_t *exact_copy(const void *p, size_t n)
{
    uint8_t *copy = malloc(n);
    if (n > 0) {
        assert_non_null(copy);
        memcpy(copy, p, n);
    }
    return copy;
}

static void fix_crc(uint8_t *batch)
{
    le32_put(batch + KAPPA_BATCH_OFF_CRC,
             batch_crc_compute(batch, batch_bytes(batch)));
}

/* Records as the test describes them. */

struct rec {
    const void *key; /* NULL: null key */
    uint32_t key_len;
    const void *value; /* NULL: null value */
    uint32_t value_len;
    const struct record_header *headers;
    uint32_t n_headers;
    int64_t ts;
};

struct recs {
    struct rec *v;
    uint32_t n, cap;
    void *blobs[4]; /* owned by the set */
    int n_blobs;
};

static struct rec *recs_push(struct recs *rs)
{
    if (rs->n == rs->cap) {
        rs->cap = rs->cap == 0 ? 16 : rs->cap * 2;
        rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
        assert_non_null(rs->v);
    }
    memset(&rs->v[rs->n], 0, sizeof rs->v[0]);
    return &rs->v[rs->n++];
}

static void *recs_blob(struct recs *rs, size_t n)
{
    void *p = malloc(n);
    assert_non_null(p);
    assert_true(rs->n_blobs < (int)ARRAY_LEN(rs->blobs));
    rs->blobs[rs->n_blobs++] = p;
    return p;
}

static void recs_free(struct recs *rs)
{
    for (int i = 0; i < rs->n_blobs; i++) {
        free(rs->blobs[i]);
    }
    free(rs->v);
    memset(rs, 0, sizeof *rs);
}

static void add_kv(struct recs *rs, const char *key, const char *value,
                   int64_t ts)
{
    struct rec *r = recs_push(rs);
    r->key = key;
    r->key_len = key == NULL ? 0 : (uint32_t)strlen(key);
    r->value = value;
    r->value_len = value == NULL ? 0 : (uint32_t)strlen(value);
    r->ts = ts;
}

/* Compressible text and incompressible noise. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char words[] = "the quick brown fox jumps over the lazy dog ";
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)words[i % (sizeof words - 1)];
    }
}

static void fill_noise(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)(x >> 32);
    }
}

/* The table of valid batches. */

static void gen_single(struct recs *rs)
{
    add_kv(rs, "k", "v", 1000);
}

static void gen_null_and_empty(struct recs *rs)
{
    add_kv(rs, NULL, NULL, 5);
    add_kv(rs, NULL, "value only", 5);
    add_kv(rs, "key only", NULL, 5);
    add_kv(rs, "", "", 5); /* empty is not null */
    add_kv(rs, "", NULL, 5);
    add_kv(rs, NULL, "", 5);
}

static void gen_large(struct recs *rs)
{
    size_t key_len = 100000, value_len = 1u << 20;
    uint8_t *key = recs_blob(rs, key_len);
    uint8_t *value = recs_blob(rs, value_len);
    struct rec *r;
    fill_text(key, key_len);
    fill_text(value, value_len);
    r = recs_push(rs);
    r->key = key;
    r->key_len = (uint32_t)key_len;
    r->value = value;
    r->value_len = (uint32_t)value_len;
    r->ts = 1;
    add_kv(rs, "small", "after large", 2);
}

static void gen_noise(struct recs *rs)
{
    size_t n = 200000;
    uint8_t *value = recs_blob(rs, n);
    struct rec *r;
    fill_noise(value, n, 42);
    r = recs_push(rs);
    r->key = "noise";
    r->key_len = 5;
    r->value = value;
    r->value_len = (uint32_t)n;
    r->ts = 7;
}

static const struct record_header some_headers[] = {
    {(const uint8_t *)"h1", 2, (const uint8_t *)"v1", 2},
    {(const uint8_t *)"", 0, NULL, 0},     /* empty key, null value */
    {(const uint8_t *)"null", 4, NULL, 0}, /* null value */
    {(const uint8_t *)"empty", 5, (const uint8_t *)"", 0},
    {(const uint8_t *)"h1", 2, (const uint8_t *)"dup", 3}, /* repeated key */
};

static void gen_headers(struct recs *rs)
{
    size_t n = 1000;
    uint8_t *big = recs_blob(rs, n);
    struct record_header *hs = recs_blob(rs, 2 * sizeof *hs);
    struct rec *r;

    fill_text(big, n);
    hs[0].key = (const uint8_t *)"big";
    hs[0].key_len = 3;
    hs[0].value = big;
    hs[0].value_len = (uint32_t)n;
    hs[1] = some_headers[2];

    r = recs_push(rs);
    r->key = "with headers";
    r->key_len = 12;
    r->value = "v";
    r->value_len = 1;
    r->headers = some_headers;
    r->n_headers = ARRAY_LEN(some_headers);
    r->ts = 100;
    add_kv(rs, "no headers", "v", 100);
    r = recs_push(rs);
    r->headers = hs;
    r->n_headers = 2;
    r->ts = 100;
}

static void gen_many(struct recs *rs)
{
    uint32_t n = 10000;
    char *text = recs_blob(rs, (size_t)n * 32);
    for (uint32_t i = 0; i < n; i++) {
        char *key = text + (size_t)i * 32;
        char *value = key + 12;
        snprintf(key, 12, "key-%u", i);
        snprintf(value, 20, "value-%u", i * 7);
        add_kv(rs, key, value, 1700000000000 + i);
    }
}

static void gen_timestamps(struct recs *rs)
{
    static const int64_t ts[] = {
        1000, 500, 2000, -5, 0, INT64_MAX, INT64_MIN, 1000, -1, INT64_MAX - 1,
    };
    for (size_t i = 0; i < ARRAY_LEN(ts); i++) {
        add_kv(rs, "t", "v", ts[i]);
    }
}

static void gen_extreme_first_ts(struct recs *rs)
{
    add_kv(rs, "a", "b", INT64_MIN);
    add_kv(rs, "a", "b", INT64_MAX);
    add_kv(rs, "a", "b", 0);
}

struct batch_case {
    const char *name;
    void (*gen)(struct recs *rs);
    unsigned shrinks; /* codecs that make it smaller (else kept as is) */
};

#define LZ4  (1u << KAPPA_COMPRESSION_LZ4)
#define ZSTD (1u << KAPPA_COMPRESSION_ZSTD)

static const struct batch_case batch_cases[] = {
    {"single", gen_single, 0u},
    {"null and empty keys and values", gen_null_and_empty, 0u},
    {"large key and value", gen_large, LZ4 | ZSTD},
    {"incompressible value", gen_noise, 0u},
    {"headers", gen_headers, LZ4 | ZSTD},
    {"many records", gen_many, LZ4 | ZSTD},
    {"non-monotonic timestamps", gen_timestamps, LZ4 | ZSTD},
    {"extreme first timestamp", gen_extreme_first_ts, LZ4},
};

static void assert_nullable(const uint8_t *got, uint32_t got_len,
                            const void *want, uint32_t want_len)
{
    if (want == NULL) {
        assert_null(got);
        assert_int_equal(got_len, 0);
        return;
    }
    assert_non_null(got);
    assert_int_equal(got_len, want_len);
    if (want_len > 0) {
        assert_memory_equal(got, want, want_len);
    }
}

static void assert_record(const struct record_view *v, const struct rec *want,
                          int64_t offset)
{
    const uint8_t *p = v->headers;
    const uint8_t *end = v->headers + v->headers_bytes;

    assert_true(v->offset == offset);
    assert_true(v->timestamp_ms == want->ts);
    assert_nullable(v->key, v->key_len, want->key, want->key_len);
    assert_nullable(v->value, v->value_len, want->value, want->value_len);
    assert_int_equal(v->n_headers, want->n_headers);
    for (uint32_t i = 0; i < want->n_headers; i++) {
        struct record_header h;
        assert_int_equal(record_header_next(&p, end, &h), 0);
        assert_int_equal(h.key_len, want->headers[i].key_len);
        assert_memory_equal(h.key, want->headers[i].key, h.key_len);
        assert_nullable(h.value, h.value_len, want->headers[i].value,
                        want->headers[i].value_len);
    }
    assert_ptr_equal(p, end);
}

/* Reads one batch and compares every record. */
static void assert_batch_reads(struct batch_reader *r, const uint8_t *batch,
                               size_t n, const struct recs *rs,
                               int64_t base_offset)
{
    struct record_view v;
    int64_t max_ts = rs->v[0].ts;

    assert_int_equal(batch_reader_open(r, batch, n), 0);
    assert_int_equal(r->header.record_count, rs->n);
    assert_true(r->header.first_timestamp_ms == rs->v[0].ts);
    for (uint32_t i = 0; i < rs->n; i++) {
        assert_int_equal(batch_reader_next(r, &v), 1);
        assert_record(&v, &rs->v[i], base_offset + i);
        if (rs->v[i].ts > max_ts) {
            max_ts = rs->v[i].ts;
        }
    }
    assert_true(r->header.max_timestamp_ms == max_ts);
    assert_int_equal(batch_reader_next(r, &v), 0);
    assert_int_equal(batch_reader_next(r, &v), 0);
}

/* Builds rs into b, checking the size batch_record_bytes predicts. */
static int build(struct batch_builder *b, const struct recs *rs,
                 int compression)
{
    batch_builder_reset(b);
    for (uint32_t i = 0; i < rs->n; i++) {
        const struct rec *r = &rs->v[i];
        size_t before = batch_builder_bytes(b);
        size_t want = batch_record_bytes(
            r->key_len, r->value_len, r->headers, r->n_headers,
            (int64_t)((uint64_t)r->ts - (uint64_t)rs->v[0].ts), i);
        int rv =
            batch_builder_add(b, r->key, r->key_len, r->value, r->value_len,
                              r->headers, r->n_headers, r->ts);
        if (rv != 0) {
            return rv;
        }
        assert_int_equal(batch_builder_bytes(b) - before, want);
    }
    return batch_builder_finish(b, compression, 77, 3, 1000);
}

static void check_case(const struct batch_case *c, int compression)
{
    struct recs rs = {0};
    struct batch_builder b;
    struct batch_reader r;
    struct batch_header h;
    uint32_t n_batches;
    uint64_t n_records;
    char errmsg[KAPPA_ERRMSG_SIZE];
    uint8_t *first;
    size_t len;
    int want_attr =
        (c->shrinks >> compression) & 1 ? compression : KAPPA_COMPRESSION_NONE;

    c->gen(&rs);
    batch_builder_init(&b);
    batch_reader_init(&r);
    assert_int_equal(build(&b, &rs, compression), 0);
    len = b.buf.len;

    assert_int_equal(batch_header_decode(b.buf.data, len, &h), 0);
    assert_true(h.base_offset == 0);
    assert_int_equal(h.batch_bytes, len);
    assert_true(h.term == 0);
    assert_int_equal(h.magic, KAPPA_BATCH_MAGIC);
    assert_int_equal(h.attributes, want_attr);
    assert_int_equal(h.record_count, rs.n);
    assert_true(h.producer_id == 77);
    assert_int_equal(h.producer_epoch, 3);
    assert_int_equal(h.base_sequence, 1000);
    assert_int_equal(h.crc, batch_crc_compute(b.buf.data, len));

    assert_int_equal(batch_validate_all(b.buf.data, len, KAPPA_BATCH_BYTES_MAX,
                                        &n_batches, &n_records, errmsg),
                     0);
    assert_int_equal(n_batches, 1);
    assert_int_equal(n_records, rs.n);
    assert_batch_reads(&r, b.buf.data, len, &rs, 0);

    /* The broker's rewrites keep the CRC valid. */
    first = exact_copy(b.buf.data, len);
    batch_set_base_offset(b.buf.data, 1000000);
    batch_set_term(b.buf.data, 9);
    assert_true(batch_base_offset(b.buf.data) == 1000000);
    assert_int_equal(batch_bytes(b.buf.data), len);
    assert_int_equal(batch_verify(b.buf.data, len, &h), 0);
    assert_true(h.term == 9);
    assert_memory_equal(b.buf.data + KAPPA_BATCH_OFF_CRC,
                        first + KAPPA_BATCH_OFF_CRC, 4);
    assert_batch_reads(&r, b.buf.data, len, &rs, 1000000);

    /* Reset and rebuild: the same records give the same bytes. */
    assert_int_equal(build(&b, &rs, compression), 0);
    assert_int_equal(b.buf.len, len);
    assert_memory_equal(b.buf.data, first, len);

    free(first);
    batch_reader_free(&r);
    batch_builder_free(&b);
    recs_free(&rs);
}

static void test_round_trip_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(batch_cases); i++) {
        for (size_t c = 0; c < ARRAY_LEN(compressions); c++) {
            print_message("%s, compression %d\n", batch_cases[i].name,
                          compressions[c]);
            check_case(&batch_cases[i], compressions[c]);
        }
    }
}

/* The format of common/batch.c, byte by byte, for one record
 * {key "ab", value "xyz", header h=v}; the CRC was computed independently. */
static const uint8_t golden[] = {
    0,    0,    0,    0,    0,    0,    0,    0,    /* base_offset 0 */
    0x50, 0,    0,    0,                            /* batch_bytes 80 */
    0xde, 0xc7, 0xca, 0x1f,                         /* crc 0x1fcac7de */
    0,    0,    0,    0,    0,    0,    0,    0,    /* term 0 */
    0x01,                                           /* magic */
    0x00,                                           /* attributes */
    0,    0,                                        /* reserved */
    1,    0,    0,    0,                            /* record_count 1 */
    0xe8, 0x03, 0,    0,    0,    0,    0,    0,    /* first_timestamp 1000 */
    0xe8, 0x03, 0,    0,    0,    0,    0,    0,    /* max_timestamp 1000 */
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producer_id -1 */
    0xff, 0xff,                                     /* producer_epoch -1 */
    0,    0,                                        /* reserved */
    0xff, 0xff, 0xff, 0xff,                         /* base_sequence -1 */
    0x0f,                                           /* record length 15 */
    0x00,                                           /* attributes */
    0x00,                                           /* timestamp_delta 0 */
    0x00,                                           /* offset_delta 0 */
    0x04, 'a',  'b',                                /* key length 2 (zigzag) */
    0x06, 'x',  'y',  'z',                          /* value length 3 */
    0x01,                                           /* header count */
    0x01, 'h',                                      /* header key */
    0x02, 'v',                                      /* header value */
};

static void test_golden_bytes(void **state)
{
    static const struct record_header hdr = {(const uint8_t *)"h", 1,
                                             (const uint8_t *)"v", 1};
    struct batch_builder b;
    (void)state;
    batch_builder_init(&b);
    assert_int_equal(batch_builder_bytes(&b), KAPPA_BATCH_HEADER_BYTES);
    assert_int_equal(batch_builder_add(&b, "ab", 2, "xyz", 3, &hdr, 1, 1000),
                     0);
    assert_int_equal(batch_builder_bytes(&b), sizeof golden);
    /* Too small to gain from compression: stays uncompressed. */
    assert_int_equal(
        batch_builder_finish(&b, KAPPA_COMPRESSION_ZSTD, -1, -1, -1), 0);
    assert_int_equal(b.buf.len, sizeof golden);
    assert_memory_equal(b.buf.data, golden, sizeof golden);
    batch_builder_free(&b);
}

static void test_builder_errors(void **state)
{
    struct batch_builder b;
    uint8_t small[8] = {0};
    (void)state;
    batch_builder_init(&b);
    assert_int_equal(
        batch_builder_finish(&b, KAPPA_COMPRESSION_NONE, -1, -1, -1),
        KAPPA_EINVAL);
    /* Past the hard ceiling: refused before the value is read. */
    assert_int_equal(batch_builder_add(&b, NULL, 0, small,
                                       KAPPA_BATCH_BYTES_MAX, NULL, 0, 0),
                     KAPPA_ETOOBIG);
    assert_int_equal(batch_builder_bytes(&b), KAPPA_BATCH_HEADER_BYTES);
    assert_int_equal(
        batch_builder_finish(&b, KAPPA_COMPRESSION_NONE, -1, -1, -1),
        KAPPA_EINVAL);
    /* Still usable afterwards. */
    assert_int_equal(batch_builder_add(&b, "k", 1, "v", 1, NULL, 0, 0), 0);
    assert_int_equal(batch_builder_finish(&b, 3, -1, -1, -1), KAPPA_EINVAL);
    assert_int_equal(batch_builder_finish(&b, -1, -1, -1, -1), KAPPA_EINVAL);
    assert_int_equal(
        batch_builder_finish(&b, KAPPA_COMPRESSION_LZ4, -1, -1, -1), 0);
    assert_int_equal(
        batch_verify(b.buf.data, b.buf.len, &(struct batch_header){0}), 0);
    batch_builder_free(&b);
}

/* Three small records, uncompressed: each record is 11 bytes at
 * 64 + 11 * i: len 0x0a, attributes, ts_delta, offset_delta, key length
 * 0x04, "kI", value length 0x04, "vI", header count 0. */
#define REC_BYTES 11
static void build_three(struct batch_builder *b)
{
    batch_builder_init(b);
    assert_int_equal(batch_builder_add(b, "k0", 2, "v0", 2, NULL, 0, 100), 0);
    assert_int_equal(batch_builder_add(b, "k1", 2, "v1", 2, NULL, 0, 101), 0);
    assert_int_equal(batch_builder_add(b, "k2", 2, "v2", 2, NULL, 0, 102), 0);
    assert_int_equal(
        batch_builder_finish(b, KAPPA_COMPRESSION_NONE, -1, -1, -1), 0);
    assert_int_equal(b->buf.len, KAPPA_BATCH_HEADER_BYTES + 3 * REC_BYTES);
    assert_int_equal(b->buf.data[64], 0x0a);
    assert_int_equal(b->buf.data[64 + 2 * REC_BYTES + 3], 2);
}

/* Opens one batch and reads it to the end: the open error, the first read
 * error, or 0 after a clean end. */
static int read_all(const uint8_t *p, size_t n, uint32_t *n_read)
{
    struct batch_reader r;
    struct record_view v;
    int rv;
    *n_read = 0;
    batch_reader_init(&r);
    rv = batch_reader_open(&r, p, n);
    if (rv != 0) {
        /* A failed open leaves nothing to read. */
        assert_int_equal(batch_reader_next(&r, &v), 0);
        batch_reader_free(&r);
        return rv;
    }
    while ((rv = batch_reader_next(&r, &v)) == 1) {
        (*n_read)++;
        assert_true(*n_read <= KAPPA_BATCH_RECORDS_MAX);
    }
    /* Errors repeat rather than turning into a clean end. */
    assert_int_equal(batch_reader_next(&r, &v), rv);
    batch_reader_free(&r);
    return rv;
}

static int validate(const uint8_t *p, size_t n, char *errmsg)
{
    uint32_t n_batches;
    uint64_t n_records;
    return batch_validate_all(p, n, KAPPA_BATCH_BYTES_MAX, &n_batches,
                              &n_records, errmsg);
}

enum edit { SET, XOR };

struct header_case {
    const char *name;
    size_t off;
    int width;
    enum edit edit;
    uint64_t value;
    int fix_crc;
    int want; /* from validate_all and from the reader */
};

static const struct header_case header_cases[] = {
    {"magic 0", 24, 1, SET, 0, 1, KAPPA_ECORRUPT},
    {"magic 2", 24, 1, SET, 2, 1, KAPPA_ECORRUPT},
    {"magic 0xff", 24, 1, SET, 0xff, 1, KAPPA_ECORRUPT},
    {"reserved byte 26", 26, 1, SET, 1, 1, KAPPA_ECORRUPT},
    {"reserved byte 27", 27, 1, SET, 0x80, 1, KAPPA_ECORRUPT},
    {"reserved byte 58", 58, 1, SET, 1, 1, KAPPA_ECORRUPT},
    {"reserved byte 59", 59, 1, SET, 0x40, 1, KAPPA_ECORRUPT},
    {"compression 3", 25, 1, SET, 3, 1, KAPPA_ECORRUPT},
    {"compression 7", 25, 1, SET, 7, 1, KAPPA_ECORRUPT},
    {"attribute bit 3", 25, 1, SET, 0x08, 1, KAPPA_ECORRUPT},
    {"attribute bit 7", 25, 1, SET, 0x80, 1, KAPPA_ECORRUPT},
    {"batch_bytes 0", 8, 4, SET, 0, 0, KAPPA_ECORRUPT},
    {"batch_bytes 63", 8, 4, SET, 63, 0, KAPPA_ECORRUPT},
    {"batch_bytes 64 (no body)", 8, 4, SET, 64, 0, KAPPA_ECORRUPT},
    {"batch_bytes past the hard max", 8, 4, SET, KAPPA_BATCH_BYTES_MAX + 1, 0,
     KAPPA_ECORRUPT},
    {"batch_bytes 2^32-1", 8, 4, SET, UINT32_MAX, 0, KAPPA_ECORRUPT},
    {"batch_bytes one past the buffer", 8, 4, SET, 64 + 33 + 1, 0,
     KAPPA_ECORRUPT},
    {"record_count 0", 28, 4, SET, 0, 1, KAPPA_ECORRUPT},
    {"record_count past the max", 28, 4, SET, KAPPA_BATCH_RECORDS_MAX + 1, 1,
     KAPPA_ECORRUPT},
    {"record_count 2^32-1", 28, 4, SET, UINT32_MAX, 1, KAPPA_ECORRUPT},
    {"negative base_offset", 0, 8, SET, (uint64_t)-1, 0, KAPPA_ECORRUPT},
    {"base_offset INT64_MIN", 0, 8, SET, (uint64_t)INT64_MIN, 0,
     KAPPA_ECORRUPT},
    {"last offset overflows", 0, 8, SET, (uint64_t)INT64_MAX - 1, 0,
     KAPPA_ECORRUPT},
    {"last offset is INT64_MAX", 0, 8, SET, (uint64_t)INT64_MAX - 2, 0, 0},
    {"base_offset rewritten", 0, 8, SET, 123456789, 0, 0},
    {"term rewritten", 16, 8, SET, UINT64_MAX, 0, 0},
    {"crc bit flipped", 12, 1, XOR, 0x01, 0, KAPPA_ECRC},
    {"crc zeroed", 12, 4, SET, 0, 0, KAPPA_ECRC},
    {"first_timestamp changed", 32, 1, XOR, 0x01, 0, KAPPA_ECRC},
    {"max_timestamp changed", 47, 1, XOR, 0x80, 0, KAPPA_ECRC},
    {"producer_id changed", 48, 1, XOR, 0x01, 0, KAPPA_ECRC},
    {"producer_epoch changed", 56, 1, XOR, 0x01, 0, KAPPA_ECRC},
    {"base_sequence changed", 60, 1, XOR, 0x01, 0, KAPPA_ECRC},
    {"record_count changed", 28, 1, XOR, 0x04, 0, KAPPA_ECRC},
    {"body bit flipped", 64 + 5, 1, XOR, 0x20, 0, KAPPA_ECRC},
    {"last body byte flipped", 64 + 32, 1, XOR, 0x01, 0, KAPPA_ECRC},
};

static void apply_edit(uint8_t *p, size_t off, int width, enum edit edit,
                       uint64_t value)
{
    for (int i = 0; i < width; i++) {
        uint8_t byte = (uint8_t)(value >> (8 * i));
        p[off + (size_t)i] = edit == SET ? byte : p[off + (size_t)i] ^ byte;
    }
}

static void test_invalid_headers(void **state)
{
    struct batch_builder b;
    (void)state;
    build_three(&b);
    for (size_t i = 0; i < ARRAY_LEN(header_cases); i++) {
        const struct header_case *c = &header_cases[i];
        uint8_t *p = exact_copy(b.buf.data, b.buf.len);
        char errmsg[KAPPA_ERRMSG_SIZE] = "";
        uint32_t n_read;
        int rv;

        apply_edit(p, c->off, c->width, c->edit, c->value);
        if (c->fix_crc) {
            fix_crc(p);
        }
        rv = validate(p, b.buf.len, errmsg);
        if (rv != c->want) {
            fail_msg("%s: validate_all gave %d, want %d (%s)", c->name, rv,
                     c->want, errmsg);
        }
        rv = read_all(p, b.buf.len, &n_read);
        if (rv != c->want) {
            fail_msg("%s: reader gave %d, want %d", c->name, rv, c->want);
        }
        assert_int_equal(n_read, rv == 0 ? 3 : 0);
        free(p);
    }
    batch_builder_free(&b);
}

/* Every single-bit flip: body and checked header bytes give ECRC (or
 * ECORRUPT when the header no longer decodes); base_offset and term are
 * outside the CRC. */
static void test_every_bit_flip(void **state)
{
    struct batch_builder b;
    char errmsg[KAPPA_ERRMSG_SIZE];
    (void)state;
    build_three(&b);
    for (size_t i = 0; i < b.buf.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *p = exact_copy(b.buf.data, b.buf.len);
            struct batch_header h;
            int decodes, want, rv;
            uint32_t n_read;

            p[i] ^= (uint8_t)(1u << bit);
            decodes = batch_header_decode(p, b.buf.len, &h) == 0;
            if (i < KAPPA_BATCH_OFF_BYTES) {
                want = decodes ? 0 : KAPPA_ECORRUPT;
            } else if (i < KAPPA_BATCH_OFF_CRC) {
                want = KAPPA_ECORRUPT; /* batch_bytes no longer fits */
                if (decodes && h.batch_bytes < b.buf.len) {
                    want = KAPPA_ECRC;
                }
            } else if (i >= KAPPA_BATCH_OFF_TERM && i < KAPPA_BATCH_CRC_START) {
                want = 0;
            } else {
                want = decodes ? KAPPA_ECRC : KAPPA_ECORRUPT;
            }
            rv = read_all(p, b.buf.len, &n_read);
            if (rv != want) {
                fail_msg("byte %zu bit %d: reader %d want %d", i, bit, rv,
                         want);
            }
            rv = validate(p, b.buf.len, errmsg);
            if (rv != want) {
                fail_msg("byte %zu bit %d: validate %d want %d", i, bit, rv,
                         want);
            }
            free(p);
        }
    }
    batch_builder_free(&b);
}

static void test_truncated(void **state)
{
    struct batch_builder b;
    char errmsg[KAPPA_ERRMSG_SIZE];
    (void)state;
    build_three(&b);
    for (size_t n = 0; n < b.buf.len; n++) {
        uint8_t *p = exact_copy(b.buf.data, n);
        uint32_t n_read;
        int rv = validate(p, n, errmsg);
        assert_int_equal(rv, n == 0 ? KAPPA_EINVAL : KAPPA_ECORRUPT);
        if (n == 0) {
            assert_string_equal(errmsg, "no record batch");
        } else if (n < KAPPA_BATCH_HEADER_BYTES) {
            assert_string_equal(errmsg, "batch 0: bad header");
        } else {
            assert_string_equal(errmsg, "batch 0: truncated batch");
        }
        assert_int_equal(read_all(p, n, &n_read), KAPPA_ECORRUPT);
        free(p);
    }
    batch_builder_free(&b);
}

/* Record framing broken inside an uncompressed batch whose CRC is then
 * recomputed, so only the record checks can catch it. */
struct framing_case {
    const char *name;
    size_t off; /* from the start of the batch */
    uint8_t value;
};

#define REC(i, field) (64 + REC_BYTES * (i) + (field))

static const struct framing_case framing_cases[] = {
    {"record 0 length +1", REC(0, 0), 0x0b},
    {"record 0 length -1", REC(0, 0), 0x09},
    {"record 0 length 0", REC(0, 0), 0x00},
    {"record 0 length past the batch", REC(0, 0), 0x7f},
    {"record 0 length unterminated varint", REC(0, 0), 0x80},
    {"record 2 length past the batch", REC(2, 0), 0x0b},
    {"record 1 attributes nonzero", REC(1, 1), 0x01},
    {"record 1 attributes 0x80", REC(1, 1), 0x80},
    {"record 0 timestamp varint runs on", REC(0, 2), 0xff},
    {"record 1 repeats offset_delta 0", REC(1, 3), 0},
    {"record 2 repeats offset_delta 1", REC(2, 3), 1},
    {"record 1 offset_delta skips to 2", REC(1, 3), 2},
    {"record 2 offset_delta past record_count", REC(2, 3), 3},
    {"record 0 key length +1", REC(0, 4), 0x06},
    {"record 0 key length -2", REC(0, 4), 0x03},
    {"record 0 key null but bytes follow", REC(0, 4), 0x01},
    {"record 0 key length past the record", REC(0, 4), 0x7e},
    {"record 1 value length -1 byte", REC(1, 7), 0x02},
    {"record 1 value null but bytes follow", REC(1, 7), 0x01},
    {"record 2 value length past the batch", REC(2, 7), 0x7e},
    {"record 2 header count 1", REC(2, 10), 0x01},
    {"record 0 header count 0x7f", REC(0, 10), 0x7f},
    {"record 2 header count varint runs off", REC(2, 10), 0x80},
};

static void assert_framing_rejected(const char *name, const uint8_t *p,
                                    size_t n)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    uint32_t n_read;
    int rv = validate(p, n, errmsg);
    if (rv != KAPPA_ECORRUPT) {
        fail_msg("%s: validate_all gave %d", name, rv);
    }
    assert_string_equal(errmsg, "batch 0: malformed records");
    rv = read_all(p, n, &n_read);
    if (rv != KAPPA_ECORRUPT) {
        fail_msg("%s: reader gave %d after %u records", name, rv, n_read);
    }
}

static void test_invalid_framing(void **state)
{
    struct batch_builder b;
    (void)state;
    build_three(&b);
    for (size_t i = 0; i < ARRAY_LEN(framing_cases); i++) {
        uint8_t *p = exact_copy(b.buf.data, b.buf.len);
        p[framing_cases[i].off] = framing_cases[i].value;
        fix_crc(p);
        assert_framing_rejected(framing_cases[i].name, p, b.buf.len);
        free(p);
    }
    batch_builder_free(&b);
}

/* Changes the body length (and batch_bytes) of a copy of a batch. */
static uint8_t *resize(const uint8_t *batch, size_t len, size_t new_len)
{
    uint8_t *p = malloc(new_len);
    assert_non_null(p);
    memset(p, 0, new_len);
    memcpy(p, batch, len < new_len ? len : new_len);
    le32_put(p + KAPPA_BATCH_OFF_BYTES, (uint32_t)new_len);
    fix_crc(p);
    return p;
}

static void test_record_count_mismatch(void **state)
{
    struct batch_builder b;
    char errmsg[KAPPA_ERRMSG_SIZE];
    size_t len;
    uint8_t *p;
    uint32_t n_read;
    (void)state;
    build_three(&b);
    len = b.buf.len;

    /* One trailing zero byte after the last record. */
    p = resize(b.buf.data, len, len + 1);
    assert_framing_rejected("trailing byte", p, len + 1);
    free(p);

    /* The last byte of the last record cut. */
    p = resize(b.buf.data, len, len - 1);
    assert_framing_rejected("last record cut", p, len - 1);
    free(p);

    /* Fewer records declared than present. */
    p = exact_copy(b.buf.data, len);
    le32_put(p + 28, 2);
    fix_crc(p);
    assert_framing_rejected("record_count 2 of 3", p, len);
    assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
    assert_int_equal(n_read, 2);
    free(p);

    /* More records declared than present. */
    p = exact_copy(b.buf.data, len);
    le32_put(p + 28, 4);
    fix_crc(p);
    assert_framing_rejected("record_count 4 of 3", p, len);
    assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
    assert_int_equal(n_read, 3);
    free(p);

    /* Dropping the last record and its count is a valid batch. */
    p = resize(b.buf.data, len, len - REC_BYTES);
    le32_put(p + 28, 2);
    fix_crc(p);
    assert_int_equal(validate(p, len - REC_BYTES, errmsg), 0);
    assert_int_equal(read_all(p, len - REC_BYTES, &n_read), 0);
    assert_int_equal(n_read, 2);
    free(p);
    batch_builder_free(&b);
}

/* A hand-made single-record batch around `body`, CRC included. */
static uint8_t *raw_batch(const uint8_t *body, size_t body_len, int attributes,
                          size_t *n)
{
    struct batch_header h = {0};
    uint8_t *p = malloc(KAPPA_BATCH_HEADER_BYTES + body_len);
    assert_non_null(p);
    h.batch_bytes = (uint32_t)(KAPPA_BATCH_HEADER_BYTES + body_len);
    h.magic = KAPPA_BATCH_MAGIC;
    h.attributes = (uint8_t)attributes;
    h.record_count = 1;
    h.producer_id = -1;
    h.producer_epoch = -1;
    h.base_sequence = -1;
    batch_header_encode(&h, p);
    memcpy(p + KAPPA_BATCH_HEADER_BYTES, body, body_len);
    fix_crc(p);
    *n = h.batch_bytes;
    return p;
}

static void test_varint_limits(void **state)
{
    static const struct {
        const char *name;
        uint8_t body[24];
        size_t n;
        int want;
    } cases[] = {
        {"minimal record", {0x06, 0, 0, 0, 0x01, 0x01, 0}, 7, 0},
        /* Non-minimal varints are accepted (the CRC covers the exact
         * bytes), as in protobuf and Go's encoding/binary. */
        {"two-byte length", {0x86, 0x00, 0, 0, 0, 0x01, 0x01, 0}, 8, 0},
        {"ten-byte length",
         {0x86, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0, 0,
          0x01, 0x01, 0},
         16,
         0},
        {"length with bit 64 set",
         {0x86, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02, 0, 0, 0,
          0x01, 0x01, 0},
         16,
         KAPPA_ECORRUPT},
        {"eleven-byte length",
         {0x86, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0,
          0, 0, 0x01, 0x01, 0},
         17,
         KAPPA_ECORRUPT},
        {"key length INT64_MAX via zigzag",
         {0x0f, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0x01, 0x01, 0},
         16,
         KAPPA_ECORRUPT},
        {"key length INT64_MIN via zigzag",
         {0x0f, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
          0x01, 0x01, 0},
         16,
         KAPPA_ECORRUPT},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        char errmsg[KAPPA_ERRMSG_SIZE];
        uint32_t n_read;
        size_t n;
        uint8_t *p = raw_batch(cases[i].body, cases[i].n, 0, &n);
        int rv = validate(p, n, errmsg);
        if (rv != cases[i].want) {
            fail_msg("%s: validate_all gave %d (%s)", cases[i].name, rv,
                     errmsg);
        }
        assert_int_equal(read_all(p, n, &n_read), cases[i].want);
        assert_int_equal(n_read, cases[i].want == 0 ? 1 : 0);
        free(p);
    }
}

static void test_record_header_next(void **state)
{
    static const struct {
        uint8_t bytes[8];
        size_t n;
        int rv;
        const char *key;
        const char *value; /* NULL: null value */
    } cases[] = {
        {{0x01, 'h', 0x02, 'v'}, 4, 0, "h", "v"},
        {{0x00, 0x01}, 2, 0, "", NULL},
        {{0x00, 0x00}, 2, 0, "", ""},
        {{0}, 0, KAPPA_ECORRUPT, NULL, NULL},
        {{0x05, 'a'}, 2, KAPPA_ECORRUPT, NULL, NULL},
        {{0x01, 'h'}, 2, KAPPA_ECORRUPT, NULL, NULL},
        {{0x01, 'h', 0x04, 'v'}, 4, KAPPA_ECORRUPT, NULL, NULL},
        {{0x01, 'h', 0x03}, 3, KAPPA_ECORRUPT, NULL, NULL},
        {{0x80}, 1, KAPPA_ECORRUPT, NULL, NULL},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *p = exact_copy(cases[i].bytes, cases[i].n);
        const uint8_t *q = p;
        struct record_header h;
        assert_int_equal(record_header_next(&q, p + cases[i].n, &h),
                         cases[i].rv);
        if (cases[i].rv == 0) {
            assert_ptr_equal(q, p + cases[i].n);
            assert_int_equal(h.key_len, strlen(cases[i].key));
            assert_memory_equal(h.key, cases[i].key, h.key_len);
            assert_nullable(
                h.value, h.value_len, cases[i].value,
                cases[i].value == NULL ? 0 : (uint32_t)strlen(cases[i].value));
        }
        free(p);
    }
}

/* Builds a compressible batch of n records with the given compression. */
static void build_text(struct batch_builder *b, uint32_t n, int compression)
{
    uint8_t value[300];
    fill_text(value, sizeof value);
    batch_builder_init(b);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(
            batch_builder_add(b, &i, sizeof i, value, sizeof value, NULL, 0, i),
            0);
    }
    assert_int_equal(batch_builder_finish(b, compression, -1, -1, -1), 0);
    assert_int_equal(b->buf.data[25], compression);
}

static void test_concatenation(void **state)
{
    struct batch_builder a, b, c;
    struct buf all = {0};
    struct batch_reader r;
    struct record_view v;
    uint32_t n_batches;
    uint64_t n_records;
    char errmsg[KAPPA_ERRMSG_SIZE];
    size_t pos = 0;
    int64_t next_offset = 0;
    (void)state;

    build_three(&a);
    build_text(&b, 100, KAPPA_COMPRESSION_LZ4);
    build_text(&c, 50, KAPPA_COMPRESSION_ZSTD);
    assert_int_equal(buf_append(&all, a.buf.data, a.buf.len), 0);
    assert_int_equal(buf_append(&all, b.buf.data, b.buf.len), 0);
    assert_int_equal(buf_append(&all, c.buf.data, c.buf.len), 0);
    batch_set_base_offset(all.data + a.buf.len, 3);
    batch_set_base_offset(all.data + a.buf.len + b.buf.len, 103);

    assert_int_equal(batch_validate_all(all.data, all.len,
                                        KAPPA_BATCH_BYTES_MAX, &n_batches,
                                        &n_records, errmsg),
                     0);
    assert_int_equal(n_batches, 3);
    assert_int_equal(n_records, 153);

    /* One reader across all three (its scratch buffer is reused). */
    batch_reader_init(&r);
    while (pos < all.len) {
        int rv;
        assert_int_equal(batch_reader_open(&r, all.data + pos, all.len - pos),
                         0);
        while ((rv = batch_reader_next(&r, &v)) == 1) {
            assert_true(v.offset == next_offset);
            next_offset++;
        }
        assert_int_equal(rv, 0);
        pos += batch_bytes(all.data + pos);
    }
    assert_int_equal(next_offset, 153);
    batch_reader_free(&r);

    /* The limit is per batch. */
    assert_true(a.buf.len < b.buf.len - 1);
    assert_int_equal(
        batch_validate_all(
            all.data, all.len,
            (uint32_t)(b.buf.len > c.buf.len ? b.buf.len : c.buf.len),
            &n_batches, &n_records, errmsg),
        0);
    assert_int_equal(batch_validate_all(all.data, all.len,
                                        (uint32_t)b.buf.len - 1, &n_batches,
                                        &n_records, errmsg),
                     KAPPA_ETOOBIG);
    {
        char want[KAPPA_ERRMSG_SIZE];
        snprintf(want, sizeof want, "batch 1: %zu bytes exceeds limit %zu",
                 b.buf.len, b.buf.len - 1);
        assert_string_equal(errmsg, want);
    }
    assert_int_equal(batch_validate_all(all.data, all.len, 0, &n_batches,
                                        &n_records, errmsg),
                     KAPPA_ETOOBIG);

    /* A flipped bit in the second batch. */
    all.data[a.buf.len + 64 + 10] ^= 0x10;
    assert_int_equal(validate(all.data, all.len, errmsg), KAPPA_ECRC);
    assert_string_equal(errmsg, "batch 1: crc mismatch");
    all.data[a.buf.len + 64 + 10] ^= 0x10;

    /* A partial fourth batch. */
    assert_int_equal(buf_append(&all, a.buf.data, 10), 0);
    assert_int_equal(validate(all.data, all.len, errmsg), KAPPA_ECORRUPT);
    assert_string_equal(errmsg, "batch 3: bad header");

    buf_free(&all);
    batch_builder_free(&a);
    batch_builder_free(&b);
    batch_builder_free(&c);
}

/* Compressed bodies: validate_all checks only header and CRC (the broker
 * never decompresses), so these pass it and fail in the reader. */
static void test_invalid_compressed(void **state)
{
    static const int64_t deltas[] = {1, -1};
    static const uint32_t lengths[] = {0, KAPPA_BATCH_BYTES_MAX + 1,
                                       UINT32_MAX};
    (void)state;
    for (int codec = KAPPA_COMPRESSION_LZ4; codec <= KAPPA_COMPRESSION_ZSTD;
         codec++) {
        struct batch_builder b;
        char errmsg[KAPPA_ERRMSG_SIZE];
        uint32_t n_read, raw;
        size_t len;
        uint8_t *p;

        build_text(&b, 20, codec);
        len = b.buf.len;
        raw = le32_get(b.buf.data + 64);
        /* length (2), attributes, ts_delta, offset_delta, key length, key
         * (4), value length (2), value (300), header count. */
        assert_int_equal(raw, 20 * (2 + 1 + 1 + 1 + 1 + 4 + 2 + 300 + 1));

        for (size_t i = 0; i < ARRAY_LEN(deltas) + ARRAY_LEN(lengths); i++) {
            p = exact_copy(b.buf.data, len);
            le32_put(p + 64, i < ARRAY_LEN(deltas)
                                 ? (uint32_t)(raw + deltas[i])
                                 : lengths[i - ARRAY_LEN(deltas)]);
            fix_crc(p);
            assert_int_equal(validate(p, len, errmsg), 0);
            assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
            assert_int_equal(n_read, 0);
            free(p);
        }

        /* Garbage instead of the compressed bytes. */
        p = exact_copy(b.buf.data, len);
        memset(p + 68, 0xff, len - 68);
        fix_crc(p);
        assert_int_equal(validate(p, len, errmsg), 0);
        assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
        free(p);

        /* Compressed records fewer or more than record_count. */
        p = exact_copy(b.buf.data, len);
        le32_put(p + 28, 19);
        fix_crc(p);
        assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
        assert_int_equal(n_read, 19);
        le32_put(p + 28, 21);
        fix_crc(p);
        assert_int_equal(read_all(p, len, &n_read), KAPPA_ECORRUPT);
        assert_int_equal(n_read, 20);
        free(p);

        /* A body too short for the length prefix. */
        p = resize(b.buf.data, len, 64 + 3);
        assert_int_equal(read_all(p, 64 + 3, &n_read), KAPPA_ECORRUPT);
        free(p);
        batch_builder_free(&b);
    }
}

/* Fails the 1st, 2nd, ... allocation of building, finishing and reading a
 * batch: every failure is KAPPA_ENOMEM, nothing leaks (checked by the
 * AddressSanitizer build), and the first complete run gives the same bytes
 * as a run without failures. */
static int oom_run(int compression, struct buf *out)
{
    struct batch_builder b;
    struct batch_reader r;
    struct record_view v;
    uint8_t value[2000];
    uint32_t n_read = 0;
    int rv = 0;

    fill_text(value, sizeof value);
    batch_builder_init(&b);
    batch_reader_init(&r);
    for (uint32_t i = 0; i < 40 && rv == 0; i++) {
        rv = batch_builder_add(&b, &i, sizeof i, value, sizeof value, NULL, 0,
                               i);
    }
    if (rv == 0) {
        rv = batch_builder_finish(&b, compression, 1, 2, 3);
    }
    if (rv == 0) {
        rv = batch_reader_open(&r, b.buf.data, b.buf.len);
    }
    while (rv == 0 && (rv = batch_reader_next(&r, &v)) == 1) {
        n_read++;
        rv = 0;
    }
    if (rv == 0) {
        kappa_alloc_fail_after(0); /* for the copy */
        assert_int_equal(n_read, 40);
        assert_int_equal(buf_append(out, b.buf.data, b.buf.len), 0);
    }
    batch_reader_free(&r);
    batch_builder_free(&b);
    return rv;
}

static void test_oom_loop(void **state)
{
    (void)state;
    for (size_t c = 0; c < ARRAY_LEN(compressions); c++) {
        struct buf want = {0};
        long n_failures = 0;
        assert_int_equal(oom_run(compressions[c], &want), 0);
        for (long fail_at = 1;; fail_at++) {
            struct buf got = {0};
            int rv;
            assert_true(fail_at < 1000);
            kappa_alloc_fail_after(fail_at);
            rv = oom_run(compressions[c], &got);
            kappa_alloc_fail_after(0);
            if (rv != 0) {
                assert_int_equal(rv, KAPPA_ENOMEM);
                n_failures++;
                continue;
            }
            assert_int_equal(got.len, want.len);
            assert_memory_equal(got.data, want.data, want.len);
            buf_free(&got);
            break;
        }
        /* Growing to 80 KB takes several allocations; compression and
         * decompression take one more each. */
        assert_true(n_failures >= (compressions[c] == 0 ? 5 : 7));
        buf_free(&want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_bytes),
        cmocka_unit_test(test_round_trip_table),
        cmocka_unit_test(test_builder_errors),
        cmocka_unit_test(test_invalid_headers),
        cmocka_unit_test(test_every_bit_flip),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_invalid_framing),
        cmocka_unit_test(test_record_count_mismatch),
        cmocka_unit_test(test_varint_limits),
        cmocka_unit_test(test_record_header_next),
        cmocka_unit_test(test_concatenation),
        cmocka_unit_test(test_invalid_compressed),
        cmocka_unit_test(test_oom_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
