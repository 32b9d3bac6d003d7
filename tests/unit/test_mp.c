/* Unit tests for common/mp: exact encodings and round trips of every type
 * through mp_writer and mp_reader, and a table of invalid inputs that must
 * fail with KAPPA_EPROTO without reading past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/mp.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A copy of n bytes in a heap block of exactly n bytes, so AddressSanitizer
 * reports any read past the end. */
static uint8_t *exact_copy(const void *p, size_t n)
{
    uint8_t *copy = malloc(n);
    if (n > 0) {
        assert_non_null(copy);
        memcpy(copy, p, n);
    }
    return copy;
}

static void assert_bytes(const struct buf *b, const uint8_t *want, size_t n)
{
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
}

/* Integers. */

struct int_case {
    int64_t v;
    uint8_t enc[9];
    size_t enc_len;
};

static const struct int_case signed_cases[] = {
    {0, {0x00}, 1},
    {1, {0x01}, 1},
    {127, {0x7f}, 1},
    {128, {0xcc, 0x80}, 2},
    {255, {0xcc, 0xff}, 2},
    {256, {0xcd, 0x01, 0x00}, 3},
    {65535, {0xcd, 0xff, 0xff}, 3},
    {65536, {0xce, 0x00, 0x01, 0x00, 0x00}, 5},
    {INT32_MAX, {0xce, 0x7f, 0xff, 0xff, 0xff}, 5},
    {UINT32_MAX, {0xce, 0xff, 0xff, 0xff, 0xff}, 5},
    {(int64_t)UINT32_MAX + 1,
     {0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00},
     9},
    {INT64_MAX, {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    {-1, {0xff}, 1},
    {-32, {0xe0}, 1},
    {-33, {0xd0, 0xdf}, 2},
    {-128, {0xd0, 0x80}, 2},
    {-129, {0xd1, 0xff, 0x7f}, 3},
    {-32768, {0xd1, 0x80, 0x00}, 3},
    {-32769, {0xd2, 0xff, 0xff, 0x7f, 0xff}, 5},
    {INT32_MIN, {0xd2, 0x80, 0x00, 0x00, 0x00}, 5},
    {(int64_t)INT32_MIN - 1,
     {0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff},
     9},
    {INT64_MIN, {0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, 9},
};

static void test_int_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(signed_cases); i++) {
        const struct int_case *c = &signed_cases[i];
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        int64_t v = 0;
        uint64_t u = 0;

        mp_writer_init(&w, &out);
        mp_put_int(&w, c->v);
        assert_int_equal(w.err, 0);
        assert_bytes(&out, c->enc, c->enc_len);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_peek(&r), c->v >= 0 ? MP_UINT : MP_INT);
        assert_int_equal(mp_read_int(&r, &v), 0);
        assert_true(v == c->v);
        assert_ptr_equal(r.p, r.end);

        mp_reader_init(&r, out.data, out.len);
        if (c->v >= 0) {
            assert_int_equal(mp_read_uint(&r, &u), 0);
            assert_true(u == (uint64_t)c->v);
        } else {
            assert_int_equal(mp_read_uint(&r, &u), KAPPA_EPROTO);
            assert_int_equal(r.err, KAPPA_EPROTO);
        }

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_skip(&r), 0);
        assert_ptr_equal(r.p, r.end);
        buf_free(&out);
    }
}

static void test_uint_round_trip(void **state)
{
    static const struct {
        uint64_t v;
        uint8_t enc[9];
        size_t enc_len;
    } cases[] = {
        {0, {0x00}, 1},
        {127, {0x7f}, 1},
        {128, {0xcc, 0x80}, 2},
        {255, {0xcc, 0xff}, 2},
        {256, {0xcd, 0x01, 0x00}, 3},
        {65535, {0xcd, 0xff, 0xff}, 3},
        {65536, {0xce, 0x00, 0x01, 0x00, 0x00}, 5},
        {UINT32_MAX, {0xce, 0xff, 0xff, 0xff, 0xff}, 5},
        {(uint64_t)UINT32_MAX + 1,
         {0xcf, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00},
         9},
        {(uint64_t)INT64_MAX + 1,
         {0xcf, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
         9},
        {UINT64_MAX, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        uint64_t u = 0;
        int64_t v = 0;

        mp_writer_init(&w, &out);
        mp_put_uint(&w, cases[i].v);
        assert_int_equal(w.err, 0);
        assert_bytes(&out, cases[i].enc, cases[i].enc_len);
        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_read_uint(&r, &u), 0);
        assert_true(u == cases[i].v);
        assert_ptr_equal(r.p, r.end);

        /* Above INT64_MAX does not fit mp_read_int. */
        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_read_int(&r, &v),
                         cases[i].v > INT64_MAX ? KAPPA_EPROTO : 0);
        if (cases[i].v <= INT64_MAX) {
            assert_true(v == (int64_t)cases[i].v);
        }
        buf_free(&out);
    }
}

/* Other encoders may use wider forms than needed; the reader accepts them
 * and sign-extends signed ones by their width. */
static void test_int_non_minimal_encodings(void **state)
{
    static const struct {
        uint8_t enc[9];
        size_t enc_len;
        int64_t v;
    } cases[] = {
        {{0xcc, 0x05}, 2, 5},
        {{0xcd, 0x00, 0x05}, 3, 5},
        {{0xce, 0x00, 0x00, 0x00, 0x05}, 5, 5},
        {{0xcf, 0, 0, 0, 0, 0, 0, 0, 0x05}, 9, 5},
        {{0xd0, 0x7f}, 2, 127},
        {{0xd0, 0xff}, 2, -1},
        {{0xd1, 0x7f, 0xff}, 3, 32767},
        {{0xd1, 0xff, 0xfe}, 3, -2},
        {{0xd2, 0x00, 0x00, 0x00, 0x05}, 5, 5},
        {{0xd2, 0xff, 0xff, 0xff, 0xfd}, 5, -3},
        {{0xd3, 0, 0, 0, 0, 0, 0, 0, 0x05}, 9, 5},
        {{0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc}, 9, -4},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *p = exact_copy(cases[i].enc, cases[i].enc_len);
        struct mp_reader r;
        int64_t v = 0;
        mp_reader_init(&r, p, cases[i].enc_len);
        assert_int_equal(mp_read_int(&r, &v), 0);
        assert_true(v == cases[i].v);
        assert_ptr_equal(r.p, r.end);
        free(p);
    }
}

/* Strings and bins. */

static const size_t str_lengths[] = {0, 1, 31, 32, 255, 256, 65535, 65536};

static size_t str_header(size_t n, uint8_t *h)
{
    if (n <= 31) {
        h[0] = (uint8_t)(0xa0 | n);
        return 1;
    }
    if (n <= 0xff) {
        h[0] = 0xd9;
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xffff) {
        h[0] = 0xda;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        return 3;
    }
    h[0] = 0xdb;
    h[1] = (uint8_t)(n >> 24);
    h[2] = (uint8_t)(n >> 16);
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    return 5;
}

static size_t bin_header(size_t n, uint8_t *h)
{
    if (n <= 0xff) {
        h[0] = 0xc4;
        h[1] = (uint8_t)n;
        return 2;
    }
    if (n <= 0xffff) {
        h[0] = 0xc5;
        h[1] = (uint8_t)(n >> 8);
        h[2] = (uint8_t)n;
        return 3;
    }
    h[0] = 0xc6;
    h[1] = (uint8_t)(n >> 24);
    h[2] = (uint8_t)(n >> 16);
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
    return 5;
}

static char *pattern_alloc(size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        s[i] = (char)('a' + i % 26);
    }
    s[n] = '\0';
    return s;
}

/* Strict prefixes of one encoded value must all fail; long values check the
 * header prefixes and the last few bytes only. */
static void assert_prefixes_fail(const uint8_t *enc, size_t n, size_t hdr)
{
    for (size_t len = 0; len < n; len++) {
        struct mp_reader r;
        if (len > hdr + 2 && len + 3 < n) {
            continue;
        }
        mp_reader_init(&r, enc, len);
        assert_int_equal(mp_skip(&r), KAPPA_EPROTO);
        assert_int_equal(r.err, KAPPA_EPROTO);
        assert_true(r.p <= r.end);
    }
}

static void test_str_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(str_lengths); i++) {
        size_t n = str_lengths[i];
        char *s = pattern_alloc(n);
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        uint8_t h[5];
        size_t hn = str_header(n, h);
        const char *got = NULL;
        uint32_t got_len = 0;

        mp_writer_init(&w, &out);
        mp_put_strn(&w, s, n);
        mp_put_str(&w, s);
        assert_int_equal(w.err, 0);
        assert_int_equal(out.len, 2 * (hn + n));
        assert_memory_equal(out.data, h, hn);
        assert_memory_equal(out.data + hn, s, n);
        assert_memory_equal(out.data + hn + n, out.data, hn + n);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_peek(&r), MP_STR);
        assert_int_equal(mp_read_str(&r, &got, &got_len), 0);
        assert_int_equal(got_len, n);
        assert_ptr_equal(got, out.data + hn); /* borrowed, not copied */
        assert_int_equal(mp_skip(&r), 0);
        assert_ptr_equal(r.p, r.end);

        assert_prefixes_fail(out.data, hn + n, hn);
        buf_free(&out);
        free(s);
    }
}

static void test_bin_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(str_lengths); i++) {
        size_t n = str_lengths[i];
        char *s = pattern_alloc(n);
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        uint8_t h[5];
        size_t hn = bin_header(n, h);
        const uint8_t *got = NULL;
        uint32_t got_len = 0;

        mp_writer_init(&w, &out);
        mp_put_bin(&w, s, n);
        mp_put_bin_header(&w, n);
        assert_int_equal(w.err, 0);
        assert_int_equal(buf_append(&out, s, n), 0);
        assert_int_equal(out.len, 2 * (hn + n));
        assert_memory_equal(out.data, h, hn);
        assert_memory_equal(out.data + hn, s, n);
        assert_memory_equal(out.data + hn + n, out.data, hn + n);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_peek(&r), MP_BIN);
        assert_int_equal(mp_read_bin(&r, &got, &got_len), 0);
        assert_int_equal(got_len, n);
        assert_ptr_equal(got, out.data + hn);
        assert_int_equal(mp_skip(&r), 0);
        assert_ptr_equal(r.p, r.end);

        assert_prefixes_fail(out.data, hn + n, hn);
        buf_free(&out);
        free(s);
    }
}

/* Containers, nil and bool. */

static void test_array_round_trip(void **state)
{
    static const struct {
        uint32_t n;
        uint8_t h[5];
        size_t hn;
    } cases[] = {
        {0, {0x90}, 1},
        {1, {0x91}, 1},
        {15, {0x9f}, 1},
        {16, {0xdc, 0x00, 0x10}, 3},
        {65535, {0xdc, 0xff, 0xff}, 3},
        {65536, {0xdd, 0x00, 0x01, 0x00, 0x00}, 5},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        uint32_t n = 0;

        mp_writer_init(&w, &out);
        mp_put_array(&w, cases[i].n);
        for (uint32_t k = 0; k < cases[i].n; k++) {
            mp_put_nil(&w);
        }
        assert_int_equal(w.err, 0);
        assert_int_equal(out.len, cases[i].hn + cases[i].n);
        assert_memory_equal(out.data, cases[i].h, cases[i].hn);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_peek(&r), MP_ARRAY);
        assert_int_equal(mp_read_array(&r, &n), 0);
        assert_int_equal(n, cases[i].n);
        for (uint32_t k = 0; k < n; k++) {
            assert_int_equal(mp_read_nil(&r), 0);
        }
        assert_ptr_equal(r.p, r.end);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_skip(&r), 0);
        assert_ptr_equal(r.p, r.end);
        assert_prefixes_fail(out.data, out.len, cases[i].hn);
        buf_free(&out);
    }
}

static void test_map_round_trip(void **state)
{
    static const struct {
        uint32_t n;
        uint8_t h[5];
        size_t hn;
    } cases[] = {
        {0, {0x80}, 1},
        {1, {0x81}, 1},
        {15, {0x8f}, 1},
        {16, {0xde, 0x00, 0x10}, 3},
        {65535, {0xde, 0xff, 0xff}, 3},
        {65536, {0xdf, 0x00, 0x01, 0x00, 0x00}, 5},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        uint32_t n = 0;

        mp_writer_init(&w, &out);
        mp_put_map(&w, cases[i].n);
        for (uint32_t k = 0; k < cases[i].n; k++) {
            mp_put_uint(&w, k);
            mp_put_bool(&w, k % 2);
        }
        assert_int_equal(w.err, 0);
        assert_memory_equal(out.data, cases[i].h, cases[i].hn);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_peek(&r), MP_MAP);
        assert_int_equal(mp_read_map(&r, &n), 0);
        assert_int_equal(n, cases[i].n);
        for (uint32_t k = 0; k < n; k++) {
            uint64_t key = 0;
            int b = -1;
            assert_int_equal(mp_read_uint(&r, &key), 0);
            assert_int_equal(key, k);
            assert_int_equal(mp_read_bool(&r, &b), 0);
            assert_int_equal(b, (int)(k % 2));
        }
        assert_ptr_equal(r.p, r.end);

        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_skip(&r), 0);
        assert_ptr_equal(r.p, r.end);
        assert_prefixes_fail(out.data, out.len, cases[i].hn);
        buf_free(&out);
    }
}

static void test_nil_bool(void **state)
{
    static const uint8_t want[] = {0xc0, 0xc3, 0xc2, 0xc3};
    struct buf out = {0};
    struct mp_writer w;
    struct mp_reader r;
    int b = -1;
    (void)state;

    mp_writer_init(&w, &out);
    mp_put_nil(&w);
    mp_put_bool(&w, 1);
    mp_put_bool(&w, 0);
    mp_put_bool(&w, 7); /* any non-zero is true */
    assert_int_equal(w.err, 0);
    assert_bytes(&out, want, sizeof want);

    mp_reader_init(&r, out.data, out.len);
    assert_int_equal(mp_peek(&r), MP_NIL);
    assert_int_equal(mp_read_nil(&r), 0);
    assert_int_equal(mp_peek(&r), MP_BOOL);
    assert_int_equal(mp_read_bool(&r, &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(mp_read_bool(&r, &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(mp_skip(&r), 0);
    assert_ptr_equal(r.p, r.end);
    assert_int_equal(mp_peek(&r), MP_INVALID); /* at the end */
    buf_free(&out);
}

/* A document holding every type, floats and extensions included (written as
 * raw bytes: the writer has no API for them). */
static void build_document(struct buf *out)
{
    static const uint8_t
        raw[] =
            {
                0xca, 0x3f, 0x80, 0x00, 0x00,                  /* float32 1.0 */
                0xcb, 0x3f, 0xf0, 0,    0,    0,    0,  0,  0, /* float64 1.0 */
                0xd4, 0x01, 0xaa,                              /* fixext 1 */
                0xd8, 0x02, 0,    1,    2,    3,    4,  5,  6,
                7,    8,    9,    10,   11,   12,   13, 14, 15,
                0xc7, 0x02, 0x05, 0xaa, 0xbb,       /* ext 8 */
                0xc8, 0x00, 0x01, 0x07, 0xcc,       /* ext 16 */
                0xc9, 0x00, 0x00, 0x00, 0x00, 0x09, /* ext 32, empty */
            };
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 22 + 7); /* values below, then the raw ones */
    mp_put_nil(&w);
    mp_put_bool(&w, 1);
    mp_put_bool(&w, 0);
    mp_put_int(&w, 0);
    mp_put_int(&w, -1);
    mp_put_int(&w, 200);
    mp_put_int(&w, -200);
    mp_put_int(&w, 70000);
    mp_put_int(&w, -70000);
    mp_put_int(&w, INT64_MIN);
    mp_put_uint(&w, UINT64_MAX);
    mp_put_str(&w, "");
    mp_put_str(&w, "hello");
    mp_put_str(&w, "a string that is longer than thirty-one bytes");
    mp_put_bin(&w, "\x00\x01\x02", 3);
    mp_put_array(&w, 0);
    mp_put_array(&w, 2);
    mp_put_int(&w, 1);
    mp_put_array(&w, 2);
    mp_put_int(&w, 2);
    mp_put_array(&w, 1);
    mp_put_int(&w, 3);
    mp_put_map(&w, 0);
    mp_put_map(&w, 2);
    mp_put_str(&w, "a");
    mp_put_int(&w, 1);
    mp_put_str(&w, "b");
    mp_put_map(&w, 1);
    mp_put_str(&w, "c");
    mp_put_nil(&w);
    mp_put_strn(&w, "x\0y", 3);
    mp_put_bin(&w, NULL, 0);
    mp_put_array(&w, 1);
    mp_put_map(&w, 1);
    mp_put_bin(&w, "k", 1);
    mp_put_array(&w, 0);
    assert_int_equal(w.err, 0);
    assert_int_equal(buf_append(out, raw, sizeof raw), 0);
}

static void test_document_skip_and_prefixes(void **state)
{
    struct buf doc = {0};
    struct mp_reader r;
    (void)state;
    build_document(&doc);

    mp_reader_init(&r, doc.data, doc.len);
    assert_int_equal(mp_skip(&r), 0);
    assert_ptr_equal(r.p, r.end);

    /* Every strict prefix, in an exactly sized heap block. */
    for (size_t len = 0; len < doc.len; len++) {
        uint8_t *p = exact_copy(doc.data, len);
        mp_reader_init(&r, p, len);
        if (mp_skip(&r) != KAPPA_EPROTO) {
            fail_msg("prefix of %zu bytes of %zu did not fail", len, doc.len);
        }
        assert_int_equal(r.err, KAPPA_EPROTO);
        assert_true(r.p <= r.end);
        free(p);
    }
    buf_free(&doc);
}

static void test_peek_types(void **state)
{
    static const struct {
        uint8_t byte;
        enum mp_type type;
    } cases[] = {
        {0x00, MP_UINT},    {0x7f, MP_UINT},  {0xcc, MP_UINT},
        {0xcf, MP_UINT},    {0xe0, MP_INT},   {0xff, MP_INT},
        {0xd0, MP_INT},     {0xd3, MP_INT},   {0xa0, MP_STR},
        {0xbf, MP_STR},     {0xd9, MP_STR},   {0xdb, MP_STR},
        {0x90, MP_ARRAY},   {0x9f, MP_ARRAY}, {0xdc, MP_ARRAY},
        {0xdd, MP_ARRAY},   {0x80, MP_MAP},   {0x8f, MP_MAP},
        {0xde, MP_MAP},     {0xdf, MP_MAP},   {0xc0, MP_NIL},
        {0xc1, MP_INVALID}, {0xc2, MP_BOOL},  {0xc3, MP_BOOL},
        {0xc4, MP_BIN},     {0xc6, MP_BIN},   {0xca, MP_FLOAT},
        {0xcb, MP_FLOAT},   {0xc7, MP_EXT},   {0xc9, MP_EXT},
        {0xd4, MP_EXT},     {0xd8, MP_EXT},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct mp_reader r;
        mp_reader_init(&r, &cases[i].byte, 1);
        assert_int_equal(mp_peek(&r), cases[i].type);
    }
}

/* Invalid inputs: every one must fail with KAPPA_EPROTO. */

enum op {
    OP_SKIP,
    OP_NIL,
    OP_BOOL,
    OP_INT,
    OP_UINT,
    OP_STR,
    OP_BIN,
    OP_ARRAY,
    OP_MAP,
    OP_COUNT
};

static int run_op(struct mp_reader *r, enum op op)
{
    const char *s;
    const uint8_t *p;
    uint32_t n;
    int64_t i;
    uint64_t u;
    int b;

    switch (op) {
    case OP_SKIP:
        return mp_skip(r);
    case OP_NIL:
        return mp_read_nil(r);
    case OP_BOOL:
        return mp_read_bool(r, &b);
    case OP_INT:
        return mp_read_int(r, &i);
    case OP_UINT:
        return mp_read_uint(r, &u);
    case OP_STR:
        return mp_read_str(r, &s, &n);
    case OP_BIN:
        return mp_read_bin(r, &p, &n);
    case OP_ARRAY:
        return mp_read_array(r, &n);
    case OP_MAP:
        return mp_read_map(r, &n);
    default:
        fail();
        return -1;
    }
}

#define ALL_OPS (-1)

struct invalid_case {
    const char *name;
    uint8_t bytes[12];
    size_t n;
    int op; /* an enum op, or ALL_OPS */
};

static const struct invalid_case invalid_cases[] = {
    {"empty input", {0}, 0, ALL_OPS},
    {"0xc1 never used", {0xc1}, 1, ALL_OPS},
    {"0xc1 inside an array", {0x92, 0x01, 0xc1}, 3, OP_SKIP},
    {"0xc1 as a map value", {0x81, 0x01, 0xc1}, 3, OP_SKIP},
    {"fixarray 3 with 2 bytes left", {0x93, 0x01, 0x02}, 3, OP_ARRAY},
    {"fixarray 3 with 2 bytes left", {0x93, 0x01, 0x02}, 3, OP_SKIP},
    {"array16 5 with 4 bytes left", {0xdc, 0, 5, 1, 2, 3, 4}, 7, OP_ARRAY},
    {"array32 2 with 1 byte left", {0xdd, 0, 0, 0, 2, 1}, 6, OP_ARRAY},
    {"array32 2^32-1", {0xdd, 0xff, 0xff, 0xff, 0xff, 0}, 6, OP_SKIP},
    {"array header short", {0xdc, 0x00}, 2, OP_ARRAY},
    {"array32 header short", {0xdd, 0, 0, 0}, 4, OP_SKIP},
    {"array of 2 uint16 with 2 bytes", {0x92, 0xcd, 0x00}, 3, OP_SKIP},
    {"fixmap 2 with 3 bytes left", {0x82, 1, 2, 3}, 4, OP_MAP},
    {"fixmap 1 with 1 byte left", {0x81, 1}, 2, OP_MAP},
    {"map16 2 with 3 bytes left", {0xde, 0, 2, 1, 2, 3}, 6, OP_MAP},
    {"map32 2^32-1", {0xdf, 0xff, 0xff, 0xff, 0xff, 1, 2}, 7, OP_SKIP},
    {"map16 header short", {0xde, 0x00}, 2, OP_MAP},
    {"fixstr 5 with 2 bytes", {0xa5, 'a', 'b'}, 3, OP_STR},
    {"fixstr 5 with 2 bytes", {0xa5, 'a', 'b'}, 3, OP_SKIP},
    {"str8 5 with 1 byte", {0xd9, 5, 'a'}, 3, OP_STR},
    {"str8 without length", {0xd9}, 1, OP_STR},
    {"str16 5 with 1 byte", {0xda, 0, 5, 'a'}, 4, OP_STR},
    {"str32 2^32-1", {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6, OP_STR},
    {"str32 2^32-1", {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'}, 6, OP_SKIP},
    {"str32 1 with no body", {0xdb, 0, 0, 0, 1}, 5, OP_STR},
    {"bin8 2 with 1 byte", {0xc4, 2, 0}, 3, OP_BIN},
    {"bin8 2 with 1 byte", {0xc4, 2, 0}, 3, OP_SKIP},
    {"bin16 0xffff", {0xc5, 0xff, 0xff}, 3, OP_BIN},
    {"bin32 2^32-1", {0xc6, 0xff, 0xff, 0xff, 0xff, 0}, 6, OP_BIN},
    {"bin32 2^32-1", {0xc6, 0xff, 0xff, 0xff, 0xff, 0}, 6, OP_SKIP},
    {"uint8 short", {0xcc}, 1, OP_UINT},
    {"uint64 short", {0xcf, 0, 0, 0, 0, 0, 0, 0}, 8, OP_UINT},
    {"int16 short", {0xd1, 0xff}, 2, OP_INT},
    {"int64 short", {0xd3, 0, 0, 0, 0, 0, 0, 0}, 8, OP_SKIP},
    {"uint64 2^63 as int", {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9, OP_INT},
    {"uint64 max as int",
     {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
     9,
     OP_INT},
    {"negative as uint", {0xff}, 1, OP_UINT},
    {"int8 as uint", {0xd0, 0x01}, 2, OP_UINT},
    {"str as int", {0xa1, '1'}, 2, OP_INT},
    {"nil as int", {0xc0}, 1, OP_INT},
    {"float as int", {0xca, 0, 0, 0, 0}, 5, OP_INT},
    {"bin as str", {0xc4, 0}, 2, OP_STR},
    {"str as bin", {0xa0}, 1, OP_BIN},
    {"false as nil", {0xc2}, 1, OP_NIL},
    {"nil as bool", {0xc0}, 1, OP_BOOL},
    {"int as bool", {0x01}, 1, OP_BOOL},
    {"map as array", {0x80}, 1, OP_ARRAY},
    {"array as map", {0x90}, 1, OP_MAP},
    {"float32 short", {0xca, 0, 0}, 3, OP_SKIP},
    {"float64 short", {0xcb, 0}, 2, OP_SKIP},
    {"fixext1 short", {0xd4, 0x01}, 2, OP_SKIP},
    {"fixext16 short", {0xd8, 0x01, 0, 0}, 4, OP_SKIP},
    {"ext8 5 with 1 byte", {0xc7, 5, 1, 0xaa}, 4, OP_SKIP},
    {"ext8 without type", {0xc7, 0}, 2, OP_SKIP},
    {"ext16 header short", {0xc8, 0}, 2, OP_SKIP},
    {"ext32 2^32-1", {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, 6, OP_SKIP},
    {"ext32 2^32-1 in array",
     {0x92, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0xc0},
     8,
     OP_SKIP},
};

static void check_invalid(const struct invalid_case *c, enum op op)
{
    uint8_t *p = exact_copy(c->bytes, c->n);
    struct mp_reader r;
    int64_t v;

    mp_reader_init(&r, p, c->n);
    if (run_op(&r, op) != KAPPA_EPROTO) {
        fail_msg("%s: op %d did not fail", c->name, (int)op);
    }
    assert_int_equal(r.err, KAPPA_EPROTO);
    assert_true(r.p <= r.end);
    /* The error is sticky: nothing reads after it. */
    assert_int_equal(mp_peek(&r), MP_INVALID);
    assert_int_equal(mp_read_int(&r, &v), KAPPA_EPROTO);
    assert_int_equal(mp_skip(&r), KAPPA_EPROTO);
    free(p);
}

static void test_invalid_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(invalid_cases); i++) {
        const struct invalid_case *c = &invalid_cases[i];
        if (c->op != ALL_OPS) {
            check_invalid(c, (enum op)c->op);
            continue;
        }
        for (int op = 0; op < OP_COUNT; op++) {
            check_invalid(c, (enum op)op);
        }
    }
}

/* Typed readers on every prefix of each integer encoding. */
static void test_int_prefixes_fail(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(signed_cases); i++) {
        for (size_t len = 0; len < signed_cases[i].enc_len; len++) {
            uint8_t *p = exact_copy(signed_cases[i].enc, len);
            struct mp_reader r;
            int64_t v;
            uint64_t u;
            mp_reader_init(&r, p, len);
            assert_int_equal(mp_read_int(&r, &v), KAPPA_EPROTO);
            mp_reader_init(&r, p, len);
            assert_int_equal(mp_read_uint(&r, &u), KAPPA_EPROTO);
            free(p);
        }
    }
}

/* Nesting: `levels` containers, each holding the next; the innermost is
 * empty. */
static uint8_t *nested(size_t levels, int is_map, size_t *n)
{
    uint8_t *p = malloc(levels * 2);
    size_t len = 0;
    assert_non_null(p);
    for (size_t i = 0; i < levels; i++) {
        int last = i + 1 == levels;
        if (is_map) {
            p[len++] = last ? 0x80 : 0x81;
            if (!last) {
                p[len++] = 0x00; /* key */
            }
        } else {
            p[len++] = last ? 0x90 : 0x91;
        }
    }
    *n = len;
    return p;
}

static void test_skip_depth_limit(void **state)
{
    static const struct {
        size_t levels;
        int rv;
    } cases[] = {
        {1, 0},
        {MP_DEPTH_MAX - 1, 0},
        {MP_DEPTH_MAX, 0},
        {MP_DEPTH_MAX + 1, KAPPA_EPROTO},
        {MP_DEPTH_MAX + 2, KAPPA_EPROTO},
        {100000, KAPPA_EPROTO},
    };
    (void)state;
    for (int is_map = 0; is_map <= 1; is_map++) {
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            size_t n;
            uint8_t *p = nested(cases[i].levels, is_map, &n);
            struct mp_reader r;
            mp_reader_init(&r, p, n);
            assert_int_equal(mp_skip(&r), cases[i].rv);
            if (cases[i].rv == 0) {
                assert_ptr_equal(r.p, r.end);
            }
            free(p);
        }
    }
}

static void test_read_int_range(void **state)
{
    static const struct {
        int64_t v, lo, hi;
        int rv;
    } cases[] = {
        {10, 10, 10, 0},
        {10, 0, 100, 0},
        {10, 11, 20, KAPPA_EPROTO},
        {10, 0, 9, KAPPA_EPROTO},
        {-5, -5, 5, 0},
        {-6, -5, 5, KAPPA_EPROTO},
        {6, -5, 5, KAPPA_EPROTO},
        {INT64_MIN, INT64_MIN, INT64_MAX, 0},
        {INT64_MAX, INT64_MIN, INT64_MAX, 0},
        {INT64_MAX, 0, INT64_MAX - 1, KAPPA_EPROTO},
        {0, 1, 0, KAPPA_EPROTO}, /* empty range */
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        int64_t v = 12345;
        mp_writer_init(&w, &out);
        mp_put_int(&w, cases[i].v);
        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_read_int_range(&r, cases[i].lo, cases[i].hi, &v),
                         cases[i].rv);
        if (cases[i].rv == 0) {
            assert_true(v == cases[i].v);
        }
        buf_free(&out);
    }
    /* Not an integer at all. */
    {
        struct mp_reader r;
        int64_t v;
        mp_reader_init(&r, "\xa1x", 2);
        assert_int_equal(mp_read_int_range(&r, 0, 10, &v), KAPPA_EPROTO);
    }
}

static void test_read_cstr(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        size_t cap;
        int rv;
    } cases[] = {
        {"abc", 3, 4, 0},
        {"abc", 3, 64, 0},
        {"abc", 3, 3, KAPPA_EPROTO}, /* no room for the NUL */
        {"abc", 3, 1, KAPPA_EPROTO},
        {"abc", 3, 0, KAPPA_EPROTO},
        {"", 0, 1, 0},
        {"", 0, 0, KAPPA_EPROTO},
        {"a\0b", 3, 16, KAPPA_EPROTO},
        {"\0", 1, 16, KAPPA_EPROTO},
        {"ab\0", 3, 16, KAPPA_EPROTO},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        char dst[64];
        memset(dst, 'Z', sizeof dst);
        mp_writer_init(&w, &out);
        mp_put_strn(&w, cases[i].s, cases[i].len);
        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_read_cstr(&r, dst, cases[i].cap), cases[i].rv);
        if (cases[i].rv == 0) {
            assert_string_equal(dst, cases[i].s);
            assert_ptr_equal(r.p, r.end);
        } else {
            assert_int_equal(dst[0], 'Z'); /* untouched on failure */
        }
        buf_free(&out);
    }
    /* A long string into a short buffer. */
    {
        char *s = pattern_alloc(300);
        struct buf out = {0};
        struct mp_writer w;
        struct mp_reader r;
        char dst[256];
        mp_writer_init(&w, &out);
        mp_put_str(&w, s);
        mp_reader_init(&r, out.data, out.len);
        assert_int_equal(mp_read_cstr(&r, dst, sizeof dst), KAPPA_EPROTO);
        buf_free(&out);
        free(s);
    }
}

static void test_key_is(void **state)
{
    (void)state;
    assert_true(mp_key_is("name", 4, "name"));
    assert_false(mp_key_is("nam", 3, "name"));
    assert_false(mp_key_is("names", 5, "name"));
    assert_false(mp_key_is("namE", 4, "name"));
    assert_true(mp_key_is("", 0, ""));
    assert_false(mp_key_is("a", 1, ""));
}

/* Fails the 1st, 2nd, ... allocation while writing a document: the error
 * must be sticky and reported as KAPPA_ENOMEM, and the first run that
 * allocates enough must produce the same bytes as an unconstrained run. */
static void test_writer_oom(void **state)
{
    long n_failures = 0;
    (void)state;
    for (long fail_at = 1; fail_at < 100; fail_at++) {
        struct buf out = {0};
        struct mp_writer w;
        char *big = pattern_alloc(5000);
        kappa_alloc_fail_after(fail_at);
        mp_writer_init(&w, &out);
        mp_put_str(&w, big);
        mp_put_array(&w, 1);
        mp_put_bin(&w, big, 3000);
        kappa_alloc_fail_after(0);
        free(big);
        if (w.err != 0) {
            assert_int_equal(w.err, KAPPA_ENOMEM);
            n_failures++;
            buf_free(&out);
            continue;
        }
        assert_int_equal(out.len, 3 + 5000 + 1 + 3 + 3000);
        buf_free(&out);
        break;
    }
    assert_true(n_failures >= 1);
    assert_true(n_failures < 99);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int_round_trip),
        cmocka_unit_test(test_uint_round_trip),
        cmocka_unit_test(test_int_non_minimal_encodings),
        cmocka_unit_test(test_str_round_trip),
        cmocka_unit_test(test_bin_round_trip),
        cmocka_unit_test(test_array_round_trip),
        cmocka_unit_test(test_map_round_trip),
        cmocka_unit_test(test_nil_bool),
        cmocka_unit_test(test_document_skip_and_prefixes),
        cmocka_unit_test(test_peek_types),
        cmocka_unit_test(test_invalid_table),
        cmocka_unit_test(test_int_prefixes_fail),
        cmocka_unit_test(test_skip_depth_limit),
        cmocka_unit_test(test_read_int_range),
        cmocka_unit_test(test_read_cstr),
        cmocka_unit_test(test_key_is),
        cmocka_unit_test(test_writer_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
