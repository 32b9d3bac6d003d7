/* Unit tests for common/crc32c: published vectors, a bit-at-a-time reference
 * over many lengths and alignments, and extension in pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/crc32c.h"

/* The textbook definition, one bit at a time: slow but obviously right. */
static uint32_t crc32c_ref(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
    }
    return ~crc;
}

/* A deterministic pattern that is not periodic in 8 bytes. */
static void fill_pattern(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)((i * 31 + 7) ^ (i >> 8));
    }
}

struct vector {
    const char *name;
    uint8_t data[32];
    size_t n;
    uint32_t crc;
};

/* RFC 3720 (iSCSI) appendix B.4 and the usual check value. */
static const struct vector vectors[] = {
    {"empty", {0}, 0, 0x00000000u},
    {"a", {'a'}, 1, 0xC1D04330u},
    {"123456789",
     {'1', '2', '3', '4', '5', '6', '7', '8', '9'},
     9,
     0xE3069283u},
    {"32 zeros", {0}, 32, 0x8A9136AAu},
    {"32 x ff",
     {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
     32,
     0x62A8AB43u},
    {"0 .. 31",
     {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
     32,
     0x46DD794Eu},
    {"31 .. 0",
     {31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
      15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,  3,  2,  1,  0},
     32,
     0x113FDB5Cu},
};

static void test_known_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        const struct vector *v = &vectors[i];
        print_message("vector %s\n", v->name);
        assert_int_equal(crc32c(v->data, v->n), v->crc);
        assert_int_equal(crc32c_extend(0, v->data, v->n), v->crc);
        assert_int_equal(crc32c_ref(0, v->data, v->n), v->crc);
    }
}

static void test_empty_keeps_crc(void **state)
{
    static const uint8_t byte = 0;
    (void)state;
    assert_int_equal(crc32c(NULL, 0), 0);
    assert_int_equal(crc32c(&byte, 0), 0);
    assert_int_equal(crc32c_extend(0xE3069283u, &byte, 0), 0xE3069283u);
    assert_int_equal(crc32c_extend(0xdeadbeefu, &byte, 0), 0xdeadbeefu);
}

/* A long buffer with a value computed once by an independent bitwise
 * implementation, so a wrong table or hardware path cannot hide. */
static void test_long_buffer_value(void **state)
{
    size_t n = 65536 + 13;
    uint8_t *p = malloc(n);
    (void)state;
    assert_non_null(p);
    fill_pattern(p, n);
    assert_int_equal(crc32c(p, n), 0x79063AEBu);
    assert_int_equal(crc32c_ref(0, p, n), 0x79063AEBu);
    free(p);
}

/* Every length up to 1 KiB at every alignment within 8 bytes, so both the
 * 8-byte main loop and the byte tail run from every start. */
static void test_lengths_and_alignments(void **state)
{
    enum { MAX = 1024 + 16 };
    uint8_t *p = malloc(MAX);
    (void)state;
    assert_non_null(p);
    fill_pattern(p, MAX);
    for (size_t align = 0; align < 8; align++) {
        for (size_t n = 0; n + align + 8 <= MAX; n++) {
            uint32_t want = crc32c_ref(0, p + align, n);
            if (crc32c(p + align, n) != want) {
                fail_msg("align %zu length %zu", align, n);
            }
        }
    }
    free(p);
}

static void test_megabyte_matches_reference(void **state)
{
    size_t n = (1u << 20) + 5;
    uint8_t *p = malloc(n);
    (void)state;
    assert_non_null(p);
    fill_pattern(p, n);
    assert_int_equal(crc32c(p, n), crc32c_ref(0, p, n));
    free(p);
}

/* crc32c_extend over any split equals one pass over the whole. */
static void test_extend_in_pieces(void **state)
{
    enum { N = 300 };
    uint8_t p[N];
    uint32_t whole;
    (void)state;
    fill_pattern(p, N);
    whole = crc32c(p, N);
    for (size_t a = 0; a <= N; a++) {
        uint32_t c = crc32c_extend(crc32c(p, a), p + a, N - a);
        if (c != whole) {
            fail_msg("split at %zu", a);
        }
    }
    for (size_t a = 0; a <= N; a += 7) {
        for (size_t b = a; b <= N; b += 5) {
            uint32_t c = crc32c(p, a);
            c = crc32c_extend(c, p + a, b - a);
            c = crc32c_extend(c, p + b, N - b);
            if (c != whole) {
                fail_msg("splits at %zu and %zu", a, b);
            }
        }
    }
}

static void test_extend_byte_by_byte_long(void **state)
{
    size_t n = 100000;
    uint8_t *p = malloc(n);
    uint32_t c = 0;
    (void)state;
    assert_non_null(p);
    fill_pattern(p, n);
    for (size_t i = 0; i < n; i++) {
        c = crc32c_extend(c, p + i, 1);
    }
    assert_int_equal(c, crc32c(p, n));
    /* Uneven chunk sizes that straddle the 8-byte loop. */
    c = 0;
    for (size_t i = 0, step = 1; i < n; i += step, step = step % 61 + 3) {
        size_t len = step < n - i ? step : n - i;
        c = crc32c_extend(c, p + i, len);
    }
    assert_int_equal(c, crc32c(p, n));
    free(p);
}

/* A single flipped bit anywhere changes the CRC (CRC-32C detects every
 * 1-bit error). */
static void test_detects_every_bit_flip(void **state)
{
    enum { N = 64 };
    uint8_t p[N];
    uint32_t good;
    (void)state;
    fill_pattern(p, N);
    good = crc32c(p, N);
    for (size_t i = 0; i < N; i++) {
        for (int bit = 0; bit < 8; bit++) {
            p[i] ^= (uint8_t)(1u << bit);
            assert_int_not_equal(crc32c(p, N), good);
            p[i] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(crc32c(p, N), good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_empty_keeps_crc),
        cmocka_unit_test(test_long_buffer_value),
        cmocka_unit_test(test_lengths_and_alignments),
        cmocka_unit_test(test_megabyte_matches_reference),
        cmocka_unit_test(test_extend_in_pieces),
        cmocka_unit_test(test_extend_byte_by_byte_long),
        cmocka_unit_test(test_detects_every_bit_flip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
