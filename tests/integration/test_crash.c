/* SIGKILL of the node during a stream of acks=all produces loses nothing
 * acknowledged: after a restart every acknowledged record is there, at its
 * acknowledged offset, in order, exactly once. Several kill rounds, each at
 * a different point of the stream. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/support/support.h"

#define N_PARTITIONS 2
#define N_ROUNDS     4
#define IDS_MAX      2000000

struct acked {
    int32_t partition;
    int64_t offset;
};

static struct test_node node;
static struct acked *acked; /* by record id; offset -1 if not acked */
static long n_acked_round, n_failed_round, n_done_round;

static int setup(void **state)
{
    (void)state;
    acked = calloc(IDS_MAX, sizeof *acked);
    if (acked == NULL) {
        return -1;
    }
    for (long i = 0; i < IDS_MAX; i++) {
        acked[i].offset = -1;
    }
    return test_node_start(&node, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    free(acked);
    return status;
}

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    (void)arg;
    long id = (long)(intptr_t)d->opaque;
    n_done_round++;
    if (d->err == 0) {
        acked[id].partition = d->partition;
        acked[id].offset = d->offset;
        n_acked_round++;
    } else {
        n_failed_round++;
    }
}

/* Produces ids from *next_id until kill_after records of this round are
 * acknowledged, then kills the node and drains the client. */
static void produce_then_kill(long *next_id, long kill_after)
{
    const char *props[] = {"acks",
                           "all",
                           "retries",
                           "0",
                           "linger.ms",
                           "1",
                           "message.timeout.ms",
                           "5000",
                           "request.timeout.ms",
                           "5000",
                           NULL};
    struct kappa_client *c = test_client_new(node.addr, props);
    char value[48];
    int64_t deadline = test_now_ms() + test_timeout_ms(60000);

    kappa_set_delivery_cb(c, on_delivery, NULL);
    n_acked_round = n_failed_round = n_done_round = 0;
    long first = *next_id;
    while (n_acked_round < kill_after && test_now_ms() < deadline) {
        long id = (*next_id)++;
        assert_true(id < IDS_MAX);
        struct kappa_msg m = {
            .topic = "crash",
            .partition = (int32_t)(id % N_PARTITIONS),
            .value = value,
            .value_len = (size_t)snprintf(value, sizeof value, "id-%ld", id),
            .opaque = (void *)(intptr_t)id,
        };
        int rv;
        while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
            kappa_poll(c, 1);
        }
        assert_int_equal(rv, 0);
        if ((id & 63) == 0) {
            kappa_poll(c, 0);
        }
    }
    assert_true(n_acked_round >= kill_after);
    /* Kill while produce requests are still in flight. */
    test_node_kill(&node);
    (void)kappa_flush(c, test_timeout_ms(20000));
    assert_int_equal(n_done_round, *next_id - first);
    fprintf(stderr, "round: sent %ld acked %ld failed %ld\n", *next_id - first,
            n_acked_round, n_failed_round);
    kappa_client_free(c);
    assert_int_equal(test_node_restart(&node, NULL), 0);
}

static void check_log(long n_ids)
{
    struct kappa_client *c = test_client_new(node.addr, NULL);
    int64_t high[N_PARTITIONS], low, seen = 0, total = 0;
    long *id_at[N_PARTITIONS];
    unsigned char *count = calloc((size_t)n_ids, 1);
    struct kappa_record recs[512];

    assert_non_null(count);
    for (int p = 0; p < N_PARTITIONS; p++) {
        assert_int_equal(kappa_watermarks(c, "crash", p, &low, &high[p],
                                          test_timeout_ms(5000)),
                         0);
        total += high[p];
        id_at[p] = calloc((size_t)high[p] + 1, sizeof(long));
        assert_non_null(id_at[p]);
        assert_int_equal(kappa_assign(c, "crash", p, KAPPA_OFFSET_BEGINNING),
                         0);
    }
    int64_t deadline = test_now_ms() + test_timeout_ms(60000);
    while (seen < total && test_now_ms() < deadline) {
        size_t n = 0;
        assert_int_equal(kappa_consume(c, 100, recs, 512, &n), 0);
        for (size_t k = 0; k < n; k++) {
            char buf[48];
            long id;
            assert_int_equal(recs[k].err, 0);
            assert_true(recs[k].value_len < sizeof buf);
            memcpy(buf, recs[k].value, recs[k].value_len);
            buf[recs[k].value_len] = '\0';
            assert_int_equal(sscanf(buf, "id-%ld", &id), 1);
            assert_true(id >= 0 && id < n_ids);
            assert_int_equal(count[id], 0); /* never twice */
            count[id] = 1;
            id_at[recs[k].partition][recs[k].offset] = id;
            seen++;
        }
    }
    assert_int_equal(seen, total);

    long n_acked = 0;
    int64_t last_offset[N_PARTITIONS] = {-1, -1};
    for (long id = 0; id < n_ids; id++) {
        if (acked[id].offset < 0) {
            continue;
        }
        n_acked++;
        int32_t p = acked[id].partition;
        /* Present, at exactly its acknowledged offset... */
        assert_true(acked[id].offset < high[p]);
        assert_int_equal(id_at[p][acked[id].offset], id);
        /* ...and in produce order within its partition. */
        assert_true(acked[id].offset > last_offset[p]);
        last_offset[p] = acked[id].offset;
    }
    fprintf(stderr,
            "checked %ld acknowledged records among %" PRId64 " in the log\n",
            n_acked, total);
    assert_true(n_acked > 0);
    for (int p = 0; p < N_PARTITIONS; p++) {
        free(id_at[p]);
    }
    free(count);
    kappa_client_free(c);
}

static void test_sigkill_loses_nothing_acknowledged(void **state)
{
    (void)state;
    struct kappa_client *c = test_client_new(node.addr, NULL);
    long next_id = 0;
    assert_int_equal(kappa_create_topic(c, "crash", N_PARTITIONS, 1, NULL,
                                        test_timeout_ms(5000)),
                     0);
    kappa_client_free(c);
    for (int round = 0; round < N_ROUNDS; round++) {
        produce_then_kill(&next_id, 2000 + round * 15000);
    }
    check_log(next_id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_loses_nothing_acknowledged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
