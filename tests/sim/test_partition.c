/* Partition FSM on raft_fixture clusters of 3 and 5 servers: elect and
 * apply, leader isolation, kill/revive, catch-up through InstallSnapshot,
 * and idempotent-producer sequences across leader changes. After every
 * scenario all alive replicas must hold byte-identical manifests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "common/err.h"

#define TRACK_MAX 100000

static const struct partition_fsm_options track_opts = {
    .verify_crc = 1,
    .track_max = TRACK_MAX,
};

/* An acknowledged write: it must be in every replica's history. */
struct ack {
    int64_t base_offset;
    uint32_t crc;
};

struct acks {
    struct ack v[4096];
    unsigned n;
};

static void ack_add(struct acks *a, int64_t off, uint32_t crc)
{
    assert_true(a->n < sizeof a->v / sizeof a->v[0]);
    a->v[a->n].base_offset = off;
    a->v[a->n].crc = crc;
    a->n++;
}

/* Every acknowledged batch is in every alive replica's tracked history (all
 * histories here start at offset 0 unless the replica restored a snapshot,
 * and then only batches after it are checked). */
static void check_acks(struct cluster *c, const struct acks *a)
{
    for (unsigned i = 0; i < c->n; i++) {
        size_t n;
        const struct partition_applied *h;
        if (!cluster_alive(c, i)) {
            continue;
        }
        h = partition_fsm_applied(cluster_part(c, i), &n);
        for (unsigned k = 0; k < a->n; k++) {
            int found = 0;
            assert_true(a->v[k].base_offset <
                        partition_fsm_commit_offset(cluster_part(c, i)));
            if (n == 0 || a->v[k].base_offset < h[0].base_offset) {
                continue;
            }
            for (size_t j = 0; j < n && !found; j++) {
                if (h[j].base_offset == a->v[k].base_offset) {
                    assert_int_equal(h[j].crc, a->v[k].crc);
                    found = 1;
                }
            }
            assert_true(found);
        }
    }
}

/* Produces count batches from producer pid (sequences from *seq), every
 * fourth one non-idempotent; all must be acknowledged. */
static void produce_n(struct cluster *c, struct acks *a, int64_t pid,
                      int32_t *seq, unsigned count, uint32_t tag)
{
    for (unsigned k = 0; k < count; k++) {
        uint32_t n_records = 1 + (tag + k) % 5;
        int64_t off;
        uint32_t crc;
        if (k % 4 == 3) {
            assert_int_equal(cluster_produce(c, PRODUCER_ID_NONE, -1, -1,
                                             n_records, tag + k, &off, &crc),
                             0);
        } else {
            assert_int_equal(cluster_produce(c, pid, 0, *seq, n_records,
                                             tag + k, &off, &crc),
                             0);
            *seq += (int32_t)n_records;
        }
        ack_add(a, off, crc);
    }
}

static unsigned wait_new_leader(struct cluster *c, unsigned old)
{
    for (int tries = 0; tries < 600; tries++) {
        unsigned l = cluster_leader(c);
        if (l != c->n && l != old) {
            return l;
        }
        cluster_step_ms(c, 100);
    }
    fail_msg("no new leader");
    return c->n;
}

static void run_elect_apply(unsigned n)
{
    struct cluster c;
    struct acks *a = calloc(1, sizeof *a);
    int32_t seq = 0;
    int16_t epoch;
    struct producer_batch b[PRODUCER_STATE_BATCHES];
    uint32_t n_batches;

    cluster_init(&c, n, CLUSTER_PARTITION, &track_opts);
    cluster_wait_leader(&c);
    produce_n(&c, a, 1, &seq, 120, 0);
    assert_int_equal(cluster_produce_pipelined(&c, 64, 1000), 64);
    produce_n(&c, a, 2, &seq, 20, 2000);
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);
    check_acks(&c, a);
    for (unsigned i = 0; i < n; i++) {
        const struct producer_state *ps =
            partition_fsm_producers(cluster_part(&c, i));
        assert_int_equal(producer_state_count(ps), 2);
        assert_int_equal(producer_state_get(ps, 2, &epoch, b, &n_batches), 0);
        assert_int_equal(n_batches, PRODUCER_STATE_BATCHES);
        assert_int_equal(b[n_batches - 1].last_sequence, seq - 1);
    }
    cluster_close(&c);
    free(a);
}

static void test_elect_apply_3(void **state)
{
    (void)state;
    run_elect_apply(3);
}

static void test_elect_apply_5(void **state)
{
    (void)state;
    run_elect_apply(5);
}

static void run_isolate_leader(unsigned n)
{
    struct cluster c;
    struct acks *a = calloc(1, sizeof *a);
    struct buf batch = {0};
    struct cluster_req *stray;
    unsigned old, l;
    int32_t seq = 0;

    cluster_init(&c, n, CLUSTER_PARTITION, &track_opts);
    old = cluster_wait_leader(&c);
    produce_n(&c, a, 7, &seq, 30, 0);
    cluster_converge(&c);

    /* The old leader, cut off, still accepts a proposal: it must never
     * commit, and its bytes must be truncated away after the heal. */
    cluster_isolate(&c, old);
    cluster_make_batch(&batch,
                       partition_fsm_commit_offset(cluster_part(&c, old)),
                       cluster_raft(&c, old)->current_term, PRODUCER_ID_NONE,
                       -1, -1, 3, 99999);
    stray = cluster_propose(&c, old, batch.data, batch.len);
    assert_non_null(stray);
    l = wait_new_leader(&c, old);
    produce_n(&c, a, 7, &seq, 30, 100);
    assert_true(cluster_wait(&c, stray, CLUSTER_WAIT_MS));
    assert_int_not_equal(stray->status, 0); /* leadership lost */
    cluster_release(stray);

    cluster_heal(&c);
    produce_n(&c, a, 7, &seq, 10, 200);
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);
    check_acks(&c, a);
    (void)l;
    buf_free(&batch);
    cluster_close(&c);
    free(a);
}

static void test_isolate_leader_3(void **state)
{
    (void)state;
    run_isolate_leader(3);
}

static void test_isolate_leader_5(void **state)
{
    (void)state;
    run_isolate_leader(5);
}

static void run_kill_revive(unsigned n)
{
    struct cluster c;
    struct acks *a = calloc(1, sizeof *a);
    unsigned l, follower;
    int32_t seq = 0;

    cluster_init(&c, n, CLUSTER_PARTITION, &track_opts);
    l = cluster_wait_leader(&c);
    produce_n(&c, a, 3, &seq, 10, 0);
    follower = (l + 1) % n;
    cluster_kill(&c, follower);
    produce_n(&c, a, 3, &seq, 20, 100);
    cluster_revive(&c, follower);
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);

    /* Kill the leader: a new one takes over with the same state. */
    cluster_kill(&c, l);
    wait_new_leader(&c, l);
    produce_n(&c, a, 3, &seq, 20, 200);
    cluster_revive(&c, l);
    produce_n(&c, a, 3, &seq, 5, 300);
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);
    check_acks(&c, a);
    cluster_close(&c);
    free(a);
}

static void test_kill_revive_3(void **state)
{
    (void)state;
    run_kill_revive(3);
}

static void test_kill_revive_5(void **state)
{
    (void)state;
    run_kill_revive(5);
}

static void run_snapshot_install(unsigned n)
{
    struct cluster c;
    struct acks *a = calloc(1, sizeof *a);
    unsigned l, follower;
    int32_t seq = 0;
    const uint8_t *blob;
    size_t blob_len;

    cluster_init(&c, n, CLUSTER_PARTITION, &track_opts);
    cluster_set_snapshot(&c, 8, 2);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(partition_fsm_set_blob(cluster_part(&c, i), "segs", 4),
                         0);
    }
    l = cluster_wait_leader(&c);
    produce_n(&c, a, 11, &seq, 5, 0);
    follower = (l + 1) % n;
    cluster_kill(&c, follower);
    assert_int_equal(
        partition_fsm_set_blob(cluster_part(&c, follower), NULL, 0), 0);
    produce_n(&c, a, 11, &seq, 60, 100);
    cluster_revive(&c, follower);
    cluster_converge(&c);
    assert_true(raft_fixture_n_recv(cluster_fixture(&c), follower,
                                    RAFT_IO_INSTALL_SNAPSHOT) >= 1);
    /* The restored manifest carried the leader's blob. */
    blob = partition_fsm_blob(cluster_part(&c, follower), &blob_len);
    assert_int_equal(blob_len, 4);
    assert_memory_equal(blob, "segs", 4);
    cluster_check_partitions_equal(&c);
    check_acks(&c, a);
    /* It keeps up normally afterwards, duplicates included. */
    produce_n(&c, a, 11, &seq, 10, 200);
    {
        struct producer_batch b[PRODUCER_STATE_BATCHES];
        uint32_t nb;
        int64_t off;
        l = cluster_leader_ready(&c);
        assert_int_equal(producer_state_get(partition_fsm_producers(
                                                cluster_part(&c, follower)),
                                            11, NULL, b, &nb),
                         0);
        assert_int_equal(cluster_produce(&c, 11, 0, b[nb - 1].first_sequence,
                                         b[nb - 1].record_count, 1, &off, NULL),
                         0);
        assert_int_equal(off, b[nb - 1].base_offset);
    }
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);
    cluster_close(&c);
    free(a);
}

static void test_snapshot_install_3(void **state)
{
    (void)state;
    run_snapshot_install(3);
}

static void test_snapshot_install_5(void **state)
{
    (void)state;
    run_snapshot_install(5);
}

static void run_idempotent(unsigned n)
{
    struct cluster c;
    int64_t off0, off1, off, commit;
    unsigned l;

    cluster_init(&c, n, CLUSTER_PARTITION, &track_opts);
    l = cluster_wait_leader(&c);
    assert_int_equal(cluster_produce(&c, 42, 0, 0, 3, 1, &off0, NULL), 0);
    assert_int_equal(cluster_produce(&c, 42, 0, 3, 2, 2, &off1, NULL), 0);
    commit = partition_fsm_commit_offset(cluster_part(&c, l));
    /* A retry gets the original offset and appends nothing. */
    assert_int_equal(cluster_produce(&c, 42, 0, 0, 3, 1, &off, NULL), 0);
    assert_int_equal(off, off0);
    assert_int_equal(partition_fsm_commit_offset(cluster_part(&c, l)), commit);
    /* A gap and a reorder are refused. */
    assert_int_equal(cluster_produce(&c, 42, 0, 10, 1, 3, &off, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(cluster_produce(&c, 42, 0, 4, 1, 3, &off, NULL),
                     KAPPA_ESEQUENCE);

    /* After a leader change the new leader knows the same sequences. */
    cluster_converge(&c);
    cluster_isolate(&c, l);
    wait_new_leader(&c, l);
    assert_int_equal(cluster_produce(&c, 42, 0, 3, 2, 2, &off, NULL), 0);
    assert_int_equal(off, off1);
    assert_int_equal(cluster_produce(&c, 42, 0, 6, 1, 4, &off, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(cluster_produce(&c, 42, 0, 5, 1, 4, &off, NULL), 0);
    assert_int_equal(off, commit);
    cluster_heal(&c);

    /* Epoch bump: the new epoch starts at 0, the old one is fenced. */
    assert_int_equal(cluster_produce(&c, 42, 1, 3, 1, 5, &off, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(cluster_produce(&c, 42, 1, 0, 1, 5, &off, NULL), 0);
    assert_int_equal(cluster_produce(&c, 42, 0, 6, 1, 6, &off, NULL),
                     KAPPA_EFENCED);
    /* Sequence wraparound. */
    assert_int_equal(
        cluster_produce(&c, 43, 0, INT32_MAX - 1, 4, 7, &off, NULL), 0);
    assert_int_equal(cluster_produce(&c, 43, 0, 2, 1, 8, &off, NULL), 0);
    cluster_converge(&c);
    cluster_check_partitions_equal(&c);
    cluster_close(&c);
}

static void test_idempotent_3(void **state)
{
    (void)state;
    run_idempotent(3);
}

static void test_idempotent_5(void **state)
{
    (void)state;
    run_idempotent(5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elect_apply_3),
        cmocka_unit_test(test_elect_apply_5),
        cmocka_unit_test(test_isolate_leader_3),
        cmocka_unit_test(test_isolate_leader_5),
        cmocka_unit_test(test_kill_revive_3),
        cmocka_unit_test(test_kill_revive_5),
        cmocka_unit_test(test_snapshot_install_3),
        cmocka_unit_test(test_snapshot_install_5),
        cmocka_unit_test(test_idempotent_3),
        cmocka_unit_test(test_idempotent_5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
