/* Metadata FSM on raft_fixture clusters of 3 and 5 servers: topic placement
 * balance, delete, garbage commands, producer-id allocation across leader
 * changes, and catch-up through InstallSnapshot. After every scenario all
 * alive replicas must hold byte-identical snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "common/err.h"

static void register_brokers(struct cluster *c, uint32_t n_brokers)
{
    struct buf cmd = {0};
    for (uint32_t id = 1; id <= n_brokers; id++) {
        char client[32], peer[32];
        snprintf(client, sizeof client, "10.0.1.%u:9092", id);
        snprintf(peer, sizeof peer, "10.0.1.%u:9093", id);
        cmd.len = 0;
        assert_int_equal(
            meta_cmd_register_broker(&cmd, id, client, peer, 100 * id), 0);
        assert_int_equal(cluster_meta_apply(c, &cmd, NULL), 0);
    }
    buf_free(&cmd);
}

static int create_topic(struct cluster *c, const char *name, uint32_t n_parts,
                        uint32_t rf, int64_t *index)
{
    struct buf cmd = {0};
    struct meta_config_kv kv[] = {{"retention.ms", "60000"}};
    int rv;
    assert_int_equal(meta_cmd_create_topic(&cmd, name, n_parts, rf, kv, 1, 0),
                     0);
    rv = cluster_meta_apply(c, &cmd, index);
    buf_free(&cmd);
    return rv;
}

/* Counts preferred leaders and replicas per broker id (1..n_brokers) on
 * server i and checks every partition's replica list. */
static void count_placement(struct cluster *c, unsigned i, uint32_t n_brokers,
                            uint32_t *led, uint32_t *hosted)
{
    struct meta_fsm *m = cluster_meta(c, i);
    memset(led, 0, (n_brokers + 1) * sizeof *led);
    memset(hosted, 0, (n_brokers + 1) * sizeof *hosted);
    for (uint32_t t = 0; t < meta_fsm_n_topics(m); t++) {
        const struct meta_topic *topic = meta_fsm_topic_at(m, t);
        for (uint32_t p = 0; p < topic->n_partitions; p++) {
            const struct meta_partition *part = &topic->partitions[p];
            assert_int_equal(part->n_replicas, topic->replication_factor);
            for (uint32_t j = 0; j < part->n_replicas; j++) {
                assert_true(part->replicas[j] >= 1 &&
                            part->replicas[j] <= n_brokers);
                for (uint32_t k = 0; k < j; k++) {
                    assert_int_not_equal(part->replicas[k], part->replicas[j]);
                }
                hosted[part->replicas[j]]++;
            }
            led[part->replicas[0]]++;
            assert_int_equal(part->leader, part->replicas[0]);
        }
    }
}

static void spread(const uint32_t *v, uint32_t n, uint32_t *lo, uint32_t *hi)
{
    *lo = UINT32_MAX;
    *hi = 0;
    for (uint32_t id = 1; id <= n; id++) {
        *lo = v[id] < *lo ? v[id] : *lo;
        *hi = v[id] > *hi ? v[id] : *hi;
    }
}

static void run_placement(unsigned n, uint32_t n_brokers)
{
    struct cluster c;
    uint32_t led[16], hosted[16], lo, hi;
    int64_t index, last_index = 0;
    struct buf cmd = {0};

    cluster_init(&c, n, CLUSTER_META, NULL);
    cluster_wait_leader(&c);
    register_brokers(&c, n_brokers);
    for (uint32_t t = 0; t < 40; t++) {
        char name[32];
        snprintf(name, sizeof name, "topic.%u", t);
        assert_int_equal(create_topic(&c, name, 1 + (t * 7) % 9, 3, &index), 0);
        /* created_index is the entry's Raft index. */
        assert_true(index > last_index);
        assert_true((raft_index)index <=
                    raft_last_applied(cluster_raft(&c, cluster_leader(&c))));
        last_index = index;
    }
    assert_int_equal(create_topic(&c, "topic.0", 1, 1, NULL),
                     KAPPA_ETOPIC_EXISTS);
    assert_int_equal(create_topic(&c, "too-wide", 1, n_brokers + 1, NULL),
                     n_brokers + 1 > META_REPLICAS_MAX ? KAPPA_EINVAL
                                                       : KAPPA_EREPLICATION);
    cluster_converge(&c);
    cluster_check_metas_equal(&c);
    count_placement(&c, 0, n_brokers, led, hosted);
    spread(led, n_brokers, &lo, &hi);
    assert_true(hi - lo <= 1);
    spread(hosted, n_brokers, &lo, &hi);
    assert_true(hi - lo <= 3);

    /* Delete a third, create again: the least loaded brokers fill first. */
    for (uint32_t t = 0; t < 40; t += 3) {
        char name[32];
        snprintf(name, sizeof name, "topic.%u", t);
        cmd.len = 0;
        assert_int_equal(meta_cmd_delete_topic(&cmd, name), 0);
        assert_int_equal(cluster_meta_apply(&c, &cmd, NULL), 0);
        assert_int_equal(cluster_meta_apply(&c, &cmd, NULL),
                         KAPPA_EUNKNOWN_TOPIC);
    }
    count_placement(&c, 0, n_brokers, led, hosted);
    spread(led, n_brokers, &lo, &hi);
    {
        uint32_t gap = 0;
        for (uint32_t id = 1; id <= n_brokers; id++) {
            gap += hi - led[id];
        }
        assert_int_equal(create_topic(&c, "refill", gap, 2, NULL), 0);
    }
    count_placement(&c, 0, n_brokers, led, hosted);
    spread(led, n_brokers, &lo, &hi);
    assert_int_equal(hi, lo);
    cluster_converge(&c);
    cluster_check_metas_equal(&c);
    buf_free(&cmd);
    cluster_close(&c);
}

static void test_placement_3(void **state)
{
    (void)state;
    run_placement(3, 5);
}

static void test_placement_5(void **state)
{
    (void)state;
    run_placement(5, 7);
}

/* Garbage entries in the log give an error result on every replica and
 * change nothing. */
static void test_garbage_commands(void **state)
{
    struct cluster c;
    struct buf cmd = {0};
    static const uint8_t junk[][6] = {
        {0x00},
        {0x91, 0x63},
        {0x92, 0x04, 0xc1},
        {0xdd, 0xff, 0xff, 0xff, 0xff},
        {0x95, 0x01, 0x01, 0xa1, 0x61, 0xc0},
        {0x81, 0x01, 0x02},
    };
    (void)state;
    cluster_init(&c, 3, CLUSTER_META, NULL);
    cluster_wait_leader(&c);
    register_brokers(&c, 3);
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        cmd.len = 0;
        assert_int_equal(buf_append(&cmd, junk[i], sizeof junk[i]), 0);
        assert_int_equal(cluster_meta_apply(&c, &cmd, NULL), KAPPA_EPROTO);
    }
    cluster_converge(&c);
    cluster_check_metas_equal(&c);
    assert_int_equal(meta_fsm_n_brokers(cluster_meta(&c, 1)), 3);
    buf_free(&cmd);
    cluster_close(&c);
}

struct range {
    int64_t first;
    uint32_t n;
};

static int range_cmp(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

static void run_producer_ids(unsigned n)
{
    struct cluster c;
    struct buf cmd = {0};
    struct range got[200];
    unsigned n_got = 0;
    int64_t first;

    cluster_init(&c, n, CLUSTER_META, NULL);
    for (unsigned round = 0; round < 8; round++) {
        unsigned l = cluster_wait_leader(&c);
        for (unsigned k = 0; k < 20; k++) {
            uint32_t count = 1 + (round * 20 + k) % 13;
            cmd.len = 0;
            assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, count), 0);
            if (cluster_meta_apply(&c, &cmd, &first) == 0) {
                got[n_got].first = first;
                got[n_got].n = count;
                n_got++;
            }
        }
        /* Change leader: isolate or kill it, then bring it back. */
        if (round % 2 == 0) {
            cluster_isolate(&c, l);
        } else {
            cluster_kill(&c, l);
        }
        for (int tries = 0; tries < 600; tries++) {
            unsigned nl = cluster_leader(&c);
            if (nl != c.n && nl != l) {
                break;
            }
            cluster_step_ms(&c, 100);
        }
        /* A command proposed now lands on the new leader. */
        cmd.len = 0;
        assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, 5), 0);
        assert_int_equal(cluster_meta_apply(&c, &cmd, &first), 0);
        got[n_got].first = first;
        got[n_got].n = 5;
        n_got++;
        if (round % 2 == 0) {
            cluster_heal(&c);
        } else {
            cluster_revive(&c, l);
        }
    }
    assert_true(n_got >= 8 * 21);
    qsort(got, n_got, sizeof got[0], range_cmp);
    for (unsigned i = 1; i < n_got; i++) {
        assert_true(got[i - 1].first + got[i - 1].n <= got[i].first);
    }
    cluster_converge(&c);
    cluster_check_metas_equal(&c);
    assert_true(meta_fsm_next_producer_id(cluster_meta(&c, 0)) >=
                got[n_got - 1].first + got[n_got - 1].n);
    buf_free(&cmd);
    cluster_close(&c);
}

static void test_producer_ids_3(void **state)
{
    (void)state;
    run_producer_ids(3);
}

static void test_producer_ids_5(void **state)
{
    (void)state;
    run_producer_ids(5);
}

static void run_snapshot(unsigned n)
{
    struct cluster c;
    struct buf cmd = {0};
    unsigned l, follower;

    cluster_init(&c, n, CLUSTER_META, NULL);
    cluster_set_snapshot(&c, 4, 1);
    l = cluster_wait_leader(&c);
    register_brokers(&c, 4);
    follower = (l + 1) % n;
    cluster_kill(&c, follower);
    for (uint32_t t = 0; t < 30; t++) {
        char name[32];
        snprintf(name, sizeof name, "snap-%u", t);
        assert_int_equal(create_topic(&c, name, 1 + t % 5, 2, NULL), 0);
        if (t % 4 == 0) {
            struct meta_config_kv kv[] = {{"retention.ms", NULL}, {"x.y", "z"}};
            cmd.len = 0;
            assert_int_equal(meta_cmd_alter_topic_config(&cmd, name, kv, 2), 0);
            assert_int_equal(cluster_meta_apply(&c, &cmd, NULL), 0);
            cmd.len = 0;
            assert_int_equal(meta_cmd_set_leader_hint(
                                 &cmd, name, 0,
                                 meta_fsm_partition(cluster_meta(&c, l), name,
                                                    strlen(name), 0)
                                     ->replicas[1],
                                 t + 1),
                             0);
            assert_int_equal(cluster_meta_apply(&c, &cmd, NULL), 0);
        }
    }
    cmd.len = 0;
    assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, 1000), 0);
    assert_int_equal(cluster_meta_apply(&c, &cmd, NULL), 0);
    cluster_revive(&c, follower);
    cluster_converge(&c);
    assert_true(raft_fixture_n_recv(cluster_fixture(&c), follower,
                                    RAFT_IO_INSTALL_SNAPSHOT) >= 1);
    cluster_check_metas_equal(&c);
    assert_int_equal(meta_fsm_n_topics(cluster_meta(&c, follower)), 30);
    assert_int_equal(meta_fsm_next_producer_id(cluster_meta(&c, follower)),
                     1000);
    buf_free(&cmd);
    cluster_close(&c);
}

static void test_snapshot_3(void **state)
{
    (void)state;
    run_snapshot(3);
}

static void test_snapshot_5(void **state)
{
    (void)state;
    run_snapshot(5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_placement_3),
        cmocka_unit_test(test_placement_5),
        cmocka_unit_test(test_garbage_commands),
        cmocka_unit_test(test_producer_ids_3),
        cmocka_unit_test(test_producer_ids_5),
        cmocka_unit_test(test_snapshot_3),
        cmocka_unit_test(test_snapshot_5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
