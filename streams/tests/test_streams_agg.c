/* Aggregations (count, sum, min, max, avg, distinct), their merge, and the
 * checkpoint encoding of partial aggregates, valid and corrupt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/log.h"
#include "streams/state.h"
#include "streams/window.h"

static struct kappa_field num(double d)
{
    struct kappa_field f = {.type = KAPPA_FIELD_DOUBLE, .d = d};
    return f;
}

static struct kappa_field inum(int64_t i)
{
    struct kappa_field f = {.type = KAPPA_FIELD_INT, .i = i, .d = (double)i};
    return f;
}

static struct kappa_field str(const char *s)
{
    struct kappa_field f = {
        .type = KAPPA_FIELD_STRING, .str = s, .str_len = strlen(s)};
    return f;
}

static void fold(struct agg_state *a, enum kappa_agg_kind kind,
                 struct kappa_field f)
{
    assert_int_equal(agg_update(a, kind, 1000, &f), 0);
}

static double result_d(const struct agg_state *a, enum kappa_agg_kind kind)
{
    int is_int;
    int64_t i;
    double d;
    agg_result(a, kind, &is_int, &i, &d);
    return is_int ? (double)i : d;
}

static void test_numeric_aggs(void **state)
{
    (void)state;
    static const enum kappa_agg_kind kinds[] = {KAPPA_AGG_COUNT, KAPPA_AGG_SUM,
                                                KAPPA_AGG_MIN, KAPPA_AGG_MAX,
                                                KAPPA_AGG_AVG};
    static const double expect[] = {4, 6.5, -2, 5, 1.625};
    for (size_t k = 0; k < 5; k++) {
        struct agg_state a;
        memset(&a, 0, sizeof a);
        fold(&a, kinds[k], inum(3));
        fold(&a, kinds[k], num(0.5));
        fold(&a, kinds[k], inum(-2));
        fold(&a, kinds[k], inum(5));
        assert_true(result_d(&a, kinds[k]) == expect[k]);
        assert_int_equal(a.count, 4);
    }
}

static void test_unusable_values(void **state)
{
    (void)state;
    struct agg_state a;
    struct kappa_field s = str("x"), other = {.type = KAPPA_FIELD_OTHER};
    memset(&a, 0, sizeof a);
    assert_int_equal(agg_update(&a, KAPPA_AGG_SUM, 10, &s), KAPPA_EINVAL);
    assert_int_equal(agg_update(&a, KAPPA_AGG_MAX, 10, NULL), KAPPA_EINVAL);
    assert_int_equal(agg_update(&a, KAPPA_AGG_DISTINCT, 10, &other),
                     KAPPA_EINVAL);
    assert_int_equal(a.count, 0);
}

static void test_distinct(void **state)
{
    (void)state;
    struct agg_state a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    fold(&a, KAPPA_AGG_DISTINCT, str("u1"));
    fold(&a, KAPPA_AGG_DISTINCT, str("u2"));
    fold(&a, KAPPA_AGG_DISTINCT, str("u1"));
    fold(&a, KAPPA_AGG_DISTINCT, inum(1));
    fold(&a, KAPPA_AGG_DISTINCT, str("1")); /* differs from the integer */
    assert_true(result_d(&a, KAPPA_AGG_DISTINCT) == 4);
    assert_int_equal(a.count, 5);
    /* Many values: the set grows and stays exact. */
    for (int k = 0; k < 5000; k++) {
        char s[16];
        snprintf(s, sizeof s, "v%d", k % 2500);
        struct kappa_field f = str(s);
        assert_int_equal(agg_update(&b, KAPPA_AGG_DISTINCT, 100000, &f), 0);
    }
    assert_int_equal(b.distinct.n, 2500);
    assert_int_equal(agg_merge(&a, KAPPA_AGG_DISTINCT, 100000, &b), 0);
    assert_int_equal(a.distinct.n, 2504);
    assert_int_equal(a.count, 5005);
    /* The bound is enforced. */
    struct kappa_field f = str("new");
    assert_int_equal(agg_update(&a, KAPPA_AGG_DISTINCT, 2504, &f),
                     KAPPA_ETOOBIG);
    dset_free(&a.distinct);
    dset_free(&b.distinct);
}

static void test_merge(void **state)
{
    (void)state;
    struct agg_state a, b, empty;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&empty, 0, sizeof empty);
    fold(&a, KAPPA_AGG_AVG, inum(10));
    fold(&b, KAPPA_AGG_AVG, inum(-4));
    fold(&b, KAPPA_AGG_AVG, inum(30));
    assert_int_equal(agg_merge(&a, KAPPA_AGG_AVG, 10, &b), 0);
    assert_int_equal(agg_merge(&a, KAPPA_AGG_AVG, 10, &empty), 0);
    assert_true(a.min == -4 && a.max == 30 && a.sum == 36 && a.count == 3);
    assert_int_equal(agg_merge(&empty, KAPPA_AGG_MIN, 10, &b), 0);
    assert_true(empty.min == -4 && empty.max == 30);
}

static void roundtrip(enum kappa_agg_kind kind, const struct agg_state *a)
{
    struct buf b = {0};
    struct agg_state back;
    assert_int_equal(state_encode(a, kind, &b), 0);
    assert_int_equal(state_decode(b.data, b.len, kind, 1000, &back), 0);
    assert_int_equal(back.count, a->count);
    assert_memory_equal(&back.sum, &a->sum, sizeof a->sum);
    assert_memory_equal(&back.min, &a->min, sizeof a->min);
    assert_memory_equal(&back.max, &a->max, sizeof a->max);
    assert_int_equal(back.distinct.n, a->distinct.n);
    /* Re-encoding gives the same bytes. */
    struct buf b2 = {0};
    assert_int_equal(state_encode(&back, kind, &b2), 0);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    dset_free(&back.distinct);
    buf_free(&b);
    buf_free(&b2);
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    struct agg_state a;
    memset(&a, 0, sizeof a);
    fold(&a, KAPPA_AGG_SUM, num(0.1));
    fold(&a, KAPPA_AGG_SUM, num(0.2));
    roundtrip(KAPPA_AGG_SUM, &a);
    memset(&a, 0, sizeof a);
    for (int k = 0; k < 300; k++) {
        char s[16];
        snprintf(s, sizeof s, "user-%d", k * 7);
        fold(&a, KAPPA_AGG_DISTINCT, str(s));
    }
    roundtrip(KAPPA_AGG_DISTINCT, &a);
    dset_free(&a.distinct);
}

/* The documented layout, byte by byte. */
static void test_state_layout(void **state)
{
    (void)state;
    struct agg_state a;
    struct buf b = {0};
    memset(&a, 0, sizeof a);
    fold(&a, KAPPA_AGG_DISTINCT, str("ab"));
    assert_int_equal(state_encode(&a, KAPPA_AGG_DISTINCT, &b), 0);
    assert_int_equal(b.len, STATE_HEADER_BYTES + 2 + 3);
    assert_int_equal(b.data[0], 1);
    assert_int_equal(b.data[1], KAPPA_AGG_DISTINCT);
    assert_int_equal(b.data[2], 1);  /* count, little-endian */
    assert_int_equal(b.data[34], 1); /* n */
    assert_int_equal(b.data[38], 3); /* length of 's' 'a' 'b' */
    assert_int_equal(b.data[39], 0);
    assert_memory_equal(b.data + 40, "sab", 3);
    dset_free(&a.distinct);
    buf_free(&b);
}

static void test_state_corrupt(void **state)
{
    (void)state;
    struct agg_state a, out;
    struct buf b = {0};
    memset(&a, 0, sizeof a);
    fold(&a, KAPPA_AGG_DISTINCT, str("x"));
    fold(&a, KAPPA_AGG_DISTINCT, str("yy"));
    assert_int_equal(state_encode(&a, KAPPA_AGG_DISTINCT, &b), 0);

    kappa_log_set_level(KAPPA_LOG_OFF); /* expected corruption reports */
    /* Every truncation fails cleanly. */
    for (size_t len = 0; len < b.len; len++) {
        assert_int_not_equal(
            state_decode(b.data, len, KAPPA_AGG_DISTINCT, 10, &out), 0);
    }
    /* Trailing garbage, wrong version, wrong kind, bad length, too many. */
    uint8_t copy[128];
    memcpy(copy, b.data, b.len);
    copy[b.len] = 0;
    assert_int_equal(
        state_decode(copy, b.len + 1, KAPPA_AGG_DISTINCT, 10, &out),
        KAPPA_ECORRUPT);
    copy[0] = 2;
    assert_int_equal(state_decode(copy, b.len, KAPPA_AGG_DISTINCT, 10, &out),
                     KAPPA_ECORRUPT);
    copy[0] = 1;
    assert_int_equal(state_decode(copy, b.len, KAPPA_AGG_COUNT, 10, &out),
                     KAPPA_ECORRUPT);
    copy[38] = 0xff;
    copy[39] = 0xff;
    assert_int_equal(state_decode(copy, b.len, KAPPA_AGG_DISTINCT, 10, &out),
                     KAPPA_ECORRUPT);
    assert_int_equal(state_decode(b.data, b.len, KAPPA_AGG_DISTINCT, 1, &out),
                     KAPPA_ETOOBIG);
    /* A duplicate member: both entries "sx". */
    memcpy(copy, b.data, b.len);
    copy[41] = 2;
    copy[42] = 0;
    copy[43] = 's';
    copy[44] = 'x';
    assert_int_equal(
        state_decode(copy, b.len - 1, KAPPA_AGG_DISTINCT, 10, &out),
        KAPPA_ECORRUPT);
    /* Random bytes never crash. */
    uint64_t x = 42;
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(x % 80);
        for (size_t k = 0; k < len; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            copy[k] = (uint8_t)x;
        }
        copy[0] = 1;
        copy[1] = KAPPA_AGG_DISTINCT;
        if (state_decode(copy, len, KAPPA_AGG_DISTINCT, 10, &out) == 0) {
            dset_free(&out.distinct);
        }
        x ^= x << 13;
    }
    kappa_log_set_level(KAPPA_LOG_INFO);
    dset_free(&a.distinct);
    buf_free(&b);
}

static void test_state_oom(void **state)
{
    (void)state;
    struct agg_state a, out;
    struct buf b = {0};
    memset(&a, 0, sizeof a);
    for (int k = 0; k < 100; k++) {
        struct kappa_field f = inum(k);
        assert_int_equal(agg_update(&a, KAPPA_AGG_DISTINCT, 1000, &f), 0);
    }
    assert_int_equal(state_encode(&a, KAPPA_AGG_DISTINCT, &b), 0);
    for (long fail_at = 1; fail_at < 20; fail_at++) {
        kappa_alloc_fail_after(fail_at);
        int rv = state_decode(b.data, b.len, KAPPA_AGG_DISTINCT, 1000, &out);
        kappa_alloc_fail_after(0);
        assert_true(rv == 0 || rv == KAPPA_ENOMEM);
        dset_free(&out.distinct);
    }
    dset_free(&a.distinct);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numeric_aggs),
        cmocka_unit_test(test_unusable_values),
        cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_state_layout),
        cmocka_unit_test(test_state_corrupt),
        cmocka_unit_test(test_state_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
