/* 100,000 records produced through libkappa come back byte-identical, at
 * their acknowledged offsets, before and after a clean restart, with and
 * without compression. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/support/support.h"

#define N_RECORDS    100000
#define N_PARTITIONS 4
#define VALUE_MAX    300

struct sent {
    int32_t partition;
    int64_t offset;
    int err;
};

static struct test_node node;
static struct sent *sent;
static long n_delivered;

static int setup(void **state)
{
    (void)state;
    sent = calloc(N_RECORDS, sizeof *sent);
    return sent == NULL ? -1 : test_node_start(&node, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    free(sent);
    return status;
}

/* Record i's key and value are a pure function of i, so the reader can
 * rebuild what was sent without keeping it. */
static size_t make_value(long i, uint8_t *value)
{
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull + 1;
    size_t len = (size_t)(x % VALUE_MAX);
    for (size_t k = 0; k < len; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        value[k] = (uint8_t)x;
    }
    return len;
}

static size_t make_key(long i, char *key)
{
    return (size_t)snprintf(key, 32, "key-%ld", i);
}

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    (void)arg;
    long i = (long)(intptr_t)d->opaque;
    sent[i].partition = d->partition;
    sent[i].offset = d->offset;
    sent[i].err = d->err;
    n_delivered++;
}

static void produce_all(const char *topic, const char *compression)
{
    const char *props[] = {"compression", compression, "linger.ms", "2", NULL};
    struct kappa_client *c = test_client_new(node.addr, props);
    uint8_t value[VALUE_MAX];
    char key[32];

    assert_int_equal(kappa_create_topic(c, topic, N_PARTITIONS, 1, NULL,
                                        test_timeout_ms(5000)),
                     0);
    kappa_set_delivery_cb(c, on_delivery, NULL);
    n_delivered = 0;
    for (long i = 0; i < N_RECORDS; i++) {
        struct kappa_header h = {"seq", &i, sizeof i};
        struct kappa_msg m = {
            .topic = topic,
            .partition = KAPPA_PARTITION_ANY,
            .key = key,
            .key_len = make_key(i, key),
            .value = value,
            .value_len = make_value(i, value),
            .headers = &h,
            .n_headers = 1,
            .timestamp_ms = 1700000000000 + i,
            .opaque = (void *)(intptr_t)i,
        };
        int rv;
        while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
            kappa_poll(c, 10);
        }
        assert_int_equal(rv, 0);
    }
    assert_int_equal(kappa_flush(c, test_timeout_ms(30000)), 0);
    assert_int_equal(n_delivered, N_RECORDS);
    for (long i = 0; i < N_RECORDS; i++) {
        assert_int_equal(sent[i].err, 0);
        assert_true(sent[i].offset >= 0);
    }
    kappa_client_free(c);
}

/* Reads every partition to its high watermark and checks each record
 * against what was acknowledged. */
static void consume_and_check(const char *topic)
{
    struct kappa_client *c = test_client_new(node.addr, NULL);
    long *at[N_PARTITIONS];
    int64_t high[N_PARTITIONS], low, total = 0, seen = 0;
    struct kappa_record recs[512];

    for (int p = 0; p < N_PARTITIONS; p++) {
        assert_int_equal(kappa_watermarks(c, topic, p, &low, &high[p],
                                          test_timeout_ms(5000)),
                         0);
        assert_int_equal(low, 0);
        total += high[p];
        at[p] = calloc((size_t)high[p] + 1, sizeof(long));
        assert_non_null(at[p]);
        for (int64_t o = 0; o < high[p]; o++) {
            at[p][o] = -1;
        }
        assert_int_equal(kappa_assign(c, topic, p, KAPPA_OFFSET_BEGINNING), 0);
    }
    assert_int_equal(total, N_RECORDS);
    for (long i = 0; i < N_RECORDS; i++) {
        assert_true(sent[i].offset < high[sent[i].partition]);
        assert_int_equal(at[sent[i].partition][sent[i].offset], -1);
        at[sent[i].partition][sent[i].offset] = i;
    }

    int64_t deadline = test_now_ms() + test_timeout_ms(60000);
    while (seen < total && test_now_ms() < deadline) {
        size_t n = 0;
        assert_int_equal(kappa_consume(c, 100, recs, 512, &n), 0);
        for (size_t k = 0; k < n; k++) {
            const struct kappa_record *r = &recs[k];
            uint8_t value[VALUE_MAX];
            char key[32];
            long i;
            const char *hk;
            size_t hk_len, hv_len;
            const void *hv;

            assert_int_equal(r->err, 0);
            assert_true(r->offset < high[r->partition]);
            i = at[r->partition][r->offset];
            assert_true(i >= 0);
            at[r->partition][r->offset] = -2; /* exactly once */
            assert_int_equal(r->value_len, make_value(i, value));
            assert_memory_equal(r->value, value, r->value_len);
            assert_int_equal(r->key_len, make_key(i, key));
            assert_memory_equal(r->key, key, r->key_len);
            assert_int_equal(r->timestamp_ms, 1700000000000 + i);
            assert_int_equal(r->n_headers, 1);
            assert_int_equal(
                kappa_record_header(r, 0, &hk, &hk_len, &hv, &hv_len), 0);
            assert_int_equal(hk_len, 3);
            assert_memory_equal(hk, "seq", 3);
            assert_int_equal(hv_len, sizeof i);
            assert_memory_equal(hv, &i, sizeof i);
            seen++;
        }
    }
    assert_int_equal(seen, total);
    for (int p = 0; p < N_PARTITIONS; p++) {
        free(at[p]);
    }
    kappa_client_free(c);
}

static void test_roundtrip_plain(void **state)
{
    (void)state;
    produce_all("plain", "none");
    consume_and_check("plain");
    assert_int_equal(test_node_stop(&node), 0);
    assert_int_equal(test_node_restart(&node, NULL), 0);
    consume_and_check("plain");
}

static void test_roundtrip_lz4(void **state)
{
    (void)state;
    produce_all("lz4", "lz4");
    consume_and_check("lz4");
}

static void test_roundtrip_zstd_and_restart(void **state)
{
    (void)state;
    produce_all("zstd", "zstd");
    assert_int_equal(test_node_stop(&node), 0);
    assert_int_equal(test_node_restart(&node, NULL), 0);
    consume_and_check("zstd");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_plain),
        cmocka_unit_test(test_roundtrip_lz4),
        cmocka_unit_test(test_roundtrip_zstd_and_restart),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
