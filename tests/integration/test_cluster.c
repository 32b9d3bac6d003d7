/* Cluster mode with three real kappad processes on 127.0.0.1: replication
 * round trip at RF=3, SIGKILL of a partition leader during acks=all
 * produces (every acknowledged record read back from offset 0 exactly
 * once, at its acknowledged offset and below the high watermark),
 * minority down (writes continue), majority down (produce fails with a
 * retriable error in bounded time), and a restart of the whole cluster
 * (every topic and record found again). The tests share one cluster and
 * run in order.
 *
 * Acknowledgements are recorded per topic: only deliveries of topic "kill"
 * go to acked[], which is reset before that test. (Record ids restart at 0
 * in every topic, so an entry left by "rep" would claim an ack at exactly
 * the offset the same id has in "rep", which for the first record that
 * failed in "kill" is the high watermark at the kill.) */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/support/support.h"

#define N_NODES      3
#define N_PARTITIONS 3
#define N_RECORDS    20000
#define IDS_MAX      1000000
/* Records queued or in flight at most (bounds the ids a slow cluster, e.g.
 * under ASan, makes the producer loops use). */
#define OUTSTANDING_MAX 4000

struct acked {
    int32_t partition;
    int64_t offset;
};

static struct test_cluster cluster;
static struct acked *acked; /* by record id of topic "kill" */
static long n_kill_ids;
static long n_kill_acked; /* acknowledged records of topic "kill" */
static long n_acked, n_failed, n_done;
static long n_acked_part[N_PARTITIONS]; /* n_acked by partition */
static int last_err;
static int64_t total_rep, total_kill; /* records in each topic */

static void acked_reset(void)
{
    for (long i = 0; i < IDS_MAX; i++) {
        acked[i].partition = -1;
        acked[i].offset = -1;
    }
}

static int setup(void **state)
{
    (void)state;
    acked = calloc(IDS_MAX, sizeof *acked);
    if (acked == NULL) {
        return -1;
    }
    acked_reset();
    return test_cluster_start(&cluster, N_NODES);
}

static int teardown(void **state)
{
    (void)state;
    test_cluster_destroy(&cluster);
    free(acked);
    return 0;
}

static struct kappa_client *client(const char *const *props)
{
    return test_client_new(cluster.bootstrap, props);
}

struct leaders_wait {
    const char *topic;
    int leaders[N_PARTITIONS];
    int not_node; /* a leader must not be this node id (0: any) */
};

static int has_leaders(void *arg)
{
    struct leaders_wait *w = arg;
    for (int i = 0; i < N_NODES; i++) {
        int n, controller;
        if (cluster.nodes[i].pid <= 0) {
            continue;
        }
        if (test_metadata(cluster.nodes[i].addr, &n, &controller, w->topic,
                          w->leaders, N_PARTITIONS) != 0) {
            continue;
        }
        for (int p = 0; p < N_PARTITIONS; p++) {
            if (w->leaders[p] <= 0 || w->leaders[p] == w->not_node) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

static void wait_leaders(struct leaders_wait *w)
{
    assert_true(test_wait_until(has_leaders, w, test_timeout_ms(300), 50));
}

/* arg: the topic whose acknowledgements go to acked[] (NULL: none). */
static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    const char *track = arg;
    long id = (long)(intptr_t)d->opaque;
    n_done++;
    if (d->err == 0) {
        if (track != NULL && strcmp(d->topic, track) == 0 && id >= 0 &&
            id < IDS_MAX) {
            assert_true(d->offset >= 0);
            acked[id].partition = d->partition;
            acked[id].offset = d->offset;
        }
        if (d->partition >= 0 && d->partition < N_PARTITIONS) {
            n_acked_part[d->partition]++;
        }
        n_acked++;
    } else {
        n_failed++;
        last_err = d->err;
    }
}

static void produce_one(struct kappa_client *c, const char *topic, long id,
                        int32_t partition)
{
    char value[48];
    struct kappa_msg m = {
        .topic = topic,
        .partition = partition,
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
    if (id + 1 - n_done > OUTSTANDING_MAX) {
        int64_t deadline = test_now_ms() + test_timeout_ms(120000);
        while (id + 1 - n_done > OUTSTANDING_MAX / 2 &&
               test_now_ms() < deadline) {
            kappa_poll(c, 5);
        }
        assert_true(id + 1 - n_done <= OUTSTANDING_MAX / 2);
    }
}

/* Reads every record of topic; checks each value is "id-N" with N unique
 * and, for topic "kill", that acknowledged ids sit at their offsets in
 * produce order. For "rep", record id i must be at partition i % 3, offset
 * i / 3 after the control batches (so order and content are checked). */
static int64_t read_all(const char *topic, long n_ids, int check_acked)
{
    struct kappa_client *c = client(NULL);
    int64_t high[N_PARTITIONS], low, seen = 0, total = 0;
    long n_checked = 0;
    long *id_at[N_PARTITIONS];
    long last_id[N_PARTITIONS] = {-1, -1, -1};
    unsigned char *count = calloc((size_t)n_ids, 1);
    struct kappa_record recs[512];
    int64_t deadline;

    assert_non_null(count);
    for (int p = 0; p < N_PARTITIONS; p++) {
        assert_int_equal(kappa_watermarks(c, topic, p, &low, &high[p],
                                          test_timeout_ms(10000)),
                         0);
        total += high[p];
        id_at[p] = calloc((size_t)high[p] + 1, sizeof(long));
        assert_non_null(id_at[p]);
        assert_int_equal(kappa_assign(c, topic, p, KAPPA_OFFSET_BEGINNING), 0);
    }
    deadline = test_now_ms() + test_timeout_ms(60000);
    /* High watermarks count control batches too: stop when every
     * partition was read to its high watermark. */
    for (;;) {
        size_t n = 0;
        int done = 1;
        for (int p = 0; p < N_PARTITIONS; p++) {
            int64_t pos = -1;
            (void)kappa_position(c, topic, p, &pos);
            done &= pos >= high[p];
        }
        if (done || test_now_ms() > deadline) {
            break;
        }
        assert_int_equal(kappa_consume(c, 100, recs, 512, &n), 0);
        for (size_t k = 0; k < n; k++) {
            char buf[48];
            long id;
            int32_t p = recs[k].partition;
            assert_int_equal(recs[k].err, 0);
            assert_true(recs[k].value_len < sizeof buf);
            memcpy(buf, recs[k].value, recs[k].value_len);
            buf[recs[k].value_len] = '\0';
            assert_int_equal(sscanf(buf, "id-%ld", &id), 1);
            assert_true(id >= 0 && id < n_ids);
            assert_int_equal(count[id], 0); /* never twice */
            count[id] = 1;
            assert_true(recs[k].offset < high[p]);
            id_at[p][recs[k].offset] = id;
            if (!check_acked) {
                /* Produced in order per partition, all acknowledged. */
                assert_int_equal(id % N_PARTITIONS, p);
                assert_true(id > last_id[p]);
            }
            last_id[p] = id;
            seen++;
        }
    }
    for (long id = 0; check_acked && id < n_ids; id++) {
        int32_t p = acked[id].partition;
        if (acked[id].offset < 0) {
            continue;
        }
        n_checked++;
        assert_true(p >= 0 && p < N_PARTITIONS);
        if (acked[id].offset >= high[p] || id_at[p][acked[id].offset] != id) {
            fprintf(
                stderr,
                "id %ld acked at %d/%" PRId64 ": high %" PRId64 " found %ld\n",
                id, p, acked[id].offset, high[p],
                acked[id].offset < high[p] ? id_at[p][acked[id].offset] : -1L);
        }
        assert_true(acked[id].offset < high[p]);
        assert_int_equal(id_at[p][acked[id].offset], id);
    }
    /* Every acknowledgement was checked, none was missed. */
    if (check_acked) {
        assert_int_equal(n_checked, n_kill_acked);
    }
    fprintf(stderr,
            "%s: read %" PRId64 " records (high watermarks sum %" PRId64
            "), %ld acknowledged found at their offsets\n",
            topic, seen, total, n_checked);
    for (int p = 0; p < N_PARTITIONS; p++) {
        free(id_at[p]);
    }
    free(count);
    kappa_client_free(c);
    return seen;
}

static void test_replicate(void **state)
{
    struct leaders_wait w = {.topic = "rep"};
    struct kappa_client *c =
        client((const char *const[]){"acks", "all", "linger.ms", "2", NULL});
    (void)state;
    assert_int_equal(kappa_create_topic(c, "rep", N_PARTITIONS, 3, NULL,
                                        test_timeout_ms(10000)),
                     0);
    assert_int_equal(kappa_create_topic(c, "rep", N_PARTITIONS, 3, NULL,
                                        test_timeout_ms(10000)),
                     KAPPA_ETOPIC_EXISTS);
    wait_leaders(&w);
    kappa_set_delivery_cb(c, on_delivery, NULL);
    n_acked = n_failed = n_done = 0;
    for (long id = 0; id < N_RECORDS; id++) {
        produce_one(c, "rep", id, (int32_t)(id % N_PARTITIONS));
    }
    assert_int_equal(kappa_flush(c, test_timeout_ms(30000)), 0);
    assert_int_equal(n_acked, N_RECORDS);
    kappa_client_free(c);
    total_rep = read_all("rep", N_RECORDS, 0);
    assert_int_equal(total_rep, N_RECORDS);
}

static int node_index(int id)
{
    return id - 1;
}

static void test_kill_leader(void **state)
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
    struct leaders_wait w = {.topic = "kill"};
    struct kappa_client *c;
    int victim;
    long id = 0, acked_at_kill, acked_p0_at_kill;
    int64_t deadline;
    (void)state;

    c = client(props);

    assert_int_equal(kappa_create_topic(c, "kill", N_PARTITIONS, 3, NULL,
                                        test_timeout_ms(10000)),
                     0);
    wait_leaders(&w);
    victim = w.leaders[0];
    acked_reset();
    kappa_set_delivery_cb(c, on_delivery, (void *)"kill");
    n_acked = n_failed = n_done = 0;
    memset(n_acked_part, 0, sizeof n_acked_part);
    while (n_acked < 3000) {
        produce_one(c, "kill", id, (int32_t)(id % N_PARTITIONS));
        id++;
        if (id >= IDS_MAX / 2) {
            fprintf(stderr, "acked %ld failed %ld last %s\n", n_acked, n_failed,
                    kappa_err_name(last_err));
        }
        assert_true(id < IDS_MAX / 2);
    }
    /* Kill while produce requests are in flight, then keep producing until
     * writes resume on every partition, the killed leader's included (its
     * new leader must have acknowledged records too). */
    test_node_kill(&cluster.nodes[node_index(victim)]);
    acked_at_kill = n_acked;
    acked_p0_at_kill = n_acked_part[0];
    fprintf(stderr, "killed node %d (leader of kill/0) after %ld acks\n",
            victim, acked_at_kill);
    w.not_node = victim;
    deadline = test_now_ms() + test_timeout_ms(30000);
    while ((n_acked < acked_at_kill + 3000 ||
            n_acked_part[0] < acked_p0_at_kill + 1000) &&
           test_now_ms() < deadline) {
        produce_one(c, "kill", id, (int32_t)(id % N_PARTITIONS));
        id++;
        assert_true(id < IDS_MAX);
        if ((id & 255) == 0) {
            kappa_poll(c, 5);
        }
    }
    (void)kappa_flush(c, test_timeout_ms(20000));
    n_kill_ids = id;
    n_kill_acked = n_acked;
    fprintf(stderr,
            "kill: sent %ld acked %ld failed %ld (partition 0: %ld acked "
            "after the kill)\n",
            id, n_acked, n_failed, n_acked_part[0] - acked_p0_at_kill);
    assert_int_equal(n_done, id);
    assert_true(n_acked >= acked_at_kill + 3000);
    assert_true(n_acked_part[0] >= acked_p0_at_kill + 1000);
    kappa_client_free(c);
    wait_leaders(&w);
    total_kill = read_all("kill", n_kill_ids, 1);
    assert_int_equal(test_cluster_restart_node(&cluster, node_index(victim)),
                     0);
    assert_int_equal(
        test_cluster_wait_ready(&cluster, node_index(victim), N_NODES), 0);
}

static void test_minority_and_majority_down(void **state)
{
    const char *props[] = {"acks",
                           "all",
                           "retries",
                           "10",
                           "message.timeout.ms",
                           "4000",
                           "request.timeout.ms",
                           "2000",
                           NULL};
    struct leaders_wait w = {.topic = "rep"};
    struct kappa_client *c;
    int64_t t0, offset;
    int rv;
    (void)state;

    /* Minority down: every write still succeeds (after failover). */
    test_node_kill(&cluster.nodes[2]);
    w.not_node = 3;
    wait_leaders(&w);
    c = client(props);
    for (long i = 0; i < 300; i++) {
        char value[32];
        struct kappa_msg m = {.topic = "rep",
                              .partition = (int32_t)(i % N_PARTITIONS),
                              .value = value};
        m.value_len =
            (size_t)snprintf(value, sizeof value, "id-%ld", N_RECORDS + i);
        assert_int_equal(
            kappa_produce_sync(c, &m, &offset, test_timeout_ms(10000)), 0);
    }
    total_rep += 300;
    kappa_client_free(c);
    /* Majority down: produce fails with a retriable error, in bounded time,
     * and nothing acknowledged is lost (checked after the restart). */
    test_node_kill(&cluster.nodes[1]);
    c = client(props);
    t0 = test_now_ms();
    {
        struct kappa_msg m = {
            .topic = "rep", .partition = 0, .value = "lost?", .value_len = 5};
        rv = kappa_produce_sync(c, &m, &offset, test_timeout_ms(20000));
    }
    fprintf(stderr, "majority down: produce -> %s after %" PRId64 " ms\n",
            kappa_err_name(rv), test_now_ms() - t0);
    assert_true(rv != 0);
    assert_true(kappa_err_is_retriable(rv));
    assert_true(test_now_ms() - t0 < test_timeout_ms(15000));
    kappa_client_free(c);
}

static void test_restart_all(void **state)
{
    struct leaders_wait w = {.topic = "rep"};
    (void)state;
    for (int i = 0; i < N_NODES; i++) {
        test_node_kill(&cluster.nodes[i]);
    }
    for (int i = 0; i < N_NODES; i++) {
        assert_int_equal(test_cluster_restart_node(&cluster, i), 0);
    }
    for (int i = 0; i < N_NODES; i++) {
        assert_int_equal(test_cluster_wait_ready(&cluster, i, N_NODES), 0);
    }
    wait_leaders(&w);
    if (n_kill_ids > 0) {
        w.topic = "kill";
        wait_leaders(&w);
        assert_true(read_all("kill", n_kill_ids, 1) >= total_kill);
    }
    {
        struct kappa_client *c = client(NULL);
        struct kappa_topic_info *topics;
        size_t n;
        int64_t low, high, sum = 0;
        assert_int_equal(
            kappa_list_topics(c, NULL, &topics, &n, test_timeout_ms(10000)), 0);
        assert_int_equal(n, n_kill_ids > 0 ? 2 : 1);
        kappa_topic_info_free(topics, n);
        for (int p = 0; p < N_PARTITIONS; p++) {
            assert_int_equal(kappa_watermarks(c, "rep", p, &low, &high,
                                              test_timeout_ms(10000)),
                             0);
            sum += high;
        }
        /* Every acknowledged record of "rep" is below the watermarks. */
        assert_true(sum >= total_rep);
        kappa_client_free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replicate),
        cmocka_unit_test(test_kill_leader),
        cmocka_unit_test(test_minority_and_majority_down),
        cmocka_unit_test(test_restart_all),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
