/* Unit tests for the pure state machines without raft: producer-state
 * semantics (duplicates, gaps, fencing, wraparound, eviction), partition
 * and metadata apply on valid and garbage entries, and every encoder and
 * decoder with round trips, canonical bytes, truncation, byte flips and
 * allocation failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "common/alloc.h"
#include "common/batch.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/mp.h"
#include "consensus/meta_fsm.h"
#include "consensus/partition_fsm.h"
#include "consensus/producer_state.h"

/* A heap copy of exactly n bytes so ASan catches reads past the end. */
static uint8_t *exact_copy(const void *p, size_t n)
{
    uint8_t *copy = malloc(n > 0 ? n : 1);
    assert_non_null(copy);
    if (n > 0) {
        memcpy(copy, p, n);
    }
    return copy;
}

/* Producer state. */

static void test_producer_sequences(void **state)
{
    struct producer_state *ps = producer_state_new(16);
    int64_t off = -1;
    (void)state;
    assert_non_null(ps);

    /* Non-idempotent batches are always accepted and not recorded. */
    assert_int_equal(producer_state_check(ps, -1, -1, -1, 5, NULL), 0);
    assert_int_equal(producer_state_record(ps, -1, -1, -1, 5, 0), 0);
    assert_int_equal(producer_state_count(ps), 0);
    assert_int_equal(producer_state_check(ps, -2, 0, 0, 1, NULL), KAPPA_EINVAL);
    assert_int_equal(producer_state_check(ps, 7, -1, 0, 1, NULL), KAPPA_EINVAL);
    assert_int_equal(producer_state_check(ps, 7, 0, -5, 1, NULL), KAPPA_EINVAL);
    assert_int_equal(producer_state_check(ps, 7, 0, 0, 0, NULL), KAPPA_EINVAL);

    /* An unknown producer may start anywhere (Kafka). */
    assert_int_equal(producer_state_check(ps, 7, 0, 42, 3, NULL), 0);
    assert_int_equal(producer_state_check(ps, 7, 0, 0, 3, NULL), 0);
    assert_int_equal(producer_state_record(ps, 7, 0, 0, 3, 100), 0);
    /* Next in order is 3. */
    assert_int_equal(producer_state_check(ps, 7, 0, 3, 2, NULL), 0);
    assert_int_equal(producer_state_check(ps, 7, 0, 4, 2, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(producer_state_check(ps, 7, 0, 2, 2, NULL),
                     KAPPA_ESEQUENCE);
    /* Retry of the batch: duplicate with its offset. */
    assert_int_equal(producer_state_check(ps, 7, 0, 0, 3, &off),
                     KAPPA_EDUPLICATE);
    assert_int_equal(off, 100);
    /* Same first sequence, other length: not a duplicate, out of order. */
    assert_int_equal(producer_state_check(ps, 7, 0, 0, 2, NULL),
                     KAPPA_ESEQUENCE);

    for (int i = 1; i <= 6; i++) {
        assert_int_equal(producer_state_record(ps, 7, 0, 3 * i, 3, 100 + i), 0);
    }
    /* Only the last 5 batches are remembered: sequences 6..20. */
    assert_int_equal(producer_state_check(ps, 7, 0, 3, 3, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(producer_state_check(ps, 7, 0, 9, 3, &off),
                     KAPPA_EDUPLICATE);
    assert_int_equal(off, 103);
    assert_int_equal(producer_state_check(ps, 7, 0, 21, 1, NULL), 0);

    /* Fencing: an older epoch is fenced, a newer one must start at 0. */
    assert_int_equal(producer_state_record(ps, 7, 3, 0, 1, 200), 0);
    assert_int_equal(producer_state_check(ps, 7, 2, 1, 1, NULL), KAPPA_EFENCED);
    assert_int_equal(producer_state_check(ps, 7, 4, 5, 1, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(producer_state_check(ps, 7, 4, 0, 1, NULL), 0);
    /* A stale-epoch batch in the log is ignored by record. */
    assert_int_equal(producer_state_record(ps, 7, 1, 50, 1, 201), 0);
    assert_int_equal(producer_state_check(ps, 7, 3, 1, 1, NULL), 0);
    producer_state_free(ps);
}

static void test_producer_wraparound(void **state)
{
    struct producer_state *ps = producer_state_new(4);
    struct producer_batch b[PRODUCER_STATE_BATCHES];
    uint32_t n;
    int16_t epoch;
    int64_t off;
    (void)state;
    assert_int_equal(producer_sequence_add(INT32_MAX, 1), 0);
    assert_int_equal(producer_sequence_add(INT32_MAX - 1, 3), 1);
    assert_int_equal(producer_sequence_add(5, 0), 5);

    assert_int_equal(producer_state_record(ps, 1, 0, INT32_MAX - 2, 5, 10), 0);
    assert_int_equal(producer_state_get(ps, 1, &epoch, b, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(b[0].last_sequence, 1);
    assert_int_equal(producer_state_check(ps, 1, 0, 2, 1, NULL), 0);
    assert_int_equal(producer_state_check(ps, 1, 0, INT32_MAX - 2, 5, &off),
                     KAPPA_EDUPLICATE);
    assert_int_equal(off, 10);
    /* Ending exactly at INT32_MAX: the next one is 0. */
    assert_int_equal(producer_state_record(ps, 2, 0, INT32_MAX - 1, 2, 20), 0);
    assert_int_equal(producer_state_check(ps, 2, 0, 0, 1, NULL), 0);
    assert_int_equal(producer_state_check(ps, 2, 0, INT32_MAX, 1, NULL),
                     KAPPA_ESEQUENCE);
    assert_int_equal(producer_state_get(ps, 99, NULL, NULL, NULL),
                     KAPPA_ENOENT);
    producer_state_free(ps);
}

static void test_producer_eviction(void **state)
{
    struct producer_state *ps = producer_state_new(3);
    (void)state;
    assert_null(producer_state_new(0));
    assert_null(producer_state_new(PRODUCER_STATE_PRODUCERS_MAX + 1));
    assert_int_equal(producer_state_record(ps, 10, 0, 0, 1, 5), 0);
    assert_int_equal(producer_state_record(ps, 20, 0, 0, 1, 1), 0);
    assert_int_equal(producer_state_record(ps, 30, 0, 0, 1, 9), 0);
    /* 20 is least recently used (lowest newest offset). */
    assert_int_equal(producer_state_record(ps, 40, 0, 0, 1, 10), 0);
    assert_int_equal(producer_state_count(ps), 3);
    assert_int_equal(producer_state_get(ps, 20, NULL, NULL, NULL),
                     KAPPA_ENOENT);
    /* Touching 10 makes 30 the oldest. */
    assert_int_equal(producer_state_record(ps, 10, 0, 1, 1, 11), 0);
    assert_int_equal(producer_state_record(ps, 5, 0, 0, 1, 12), 0);
    assert_int_equal(producer_state_get(ps, 30, NULL, NULL, NULL),
                     KAPPA_ENOENT);
    assert_int_equal(producer_state_get(ps, 10, NULL, NULL, NULL), 0);
    assert_int_equal(producer_state_get(ps, 5, NULL, NULL, NULL), 0);
    assert_int_equal(producer_state_get(ps, 40, NULL, NULL, NULL), 0);
    producer_state_free(ps);
}

static void encode_ps(const struct producer_state *ps, struct buf *out)
{
    struct mp_writer w;
    out->len = 0;
    mp_writer_init(&w, out);
    producer_state_encode(ps, &w);
    assert_int_equal(w.err, 0);
}

static struct producer_state *sample_ps(void)
{
    struct producer_state *ps = producer_state_new(64);
    assert_non_null(ps);
    for (int64_t pid = 0; pid < 20; pid++) {
        for (int k = 0; k < 1 + pid % 7; k++) {
            assert_int_equal(producer_state_record(ps, pid * 1000003,
                                                   (int16_t)(pid % 3), k * 4, 4,
                                                   pid * 100 + k),
                             0);
        }
    }
    return ps;
}

static void test_producer_codec(void **state)
{
    struct producer_state *ps = sample_ps();
    struct producer_state *copy = producer_state_new(64);
    struct producer_state *small = producer_state_new(5);
    struct buf a = {0}, b = {0};
    struct mp_reader r;
    (void)state;

    encode_ps(ps, &a);
    mp_reader_init(&r, a.data, a.len);
    assert_int_equal(producer_state_decode(copy, &r), 0);
    assert_ptr_equal(r.p, r.end);
    encode_ps(copy, &b);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    /* More producers than the limit: refused, state kept. */
    mp_reader_init(&r, a.data, a.len);
    assert_int_equal(producer_state_decode(small, &r), KAPPA_EPROTO);
    assert_int_equal(producer_state_count(small), 0);

    /* Every truncation fails cleanly and leaves the state as it was. */
    for (size_t n = 0; n < a.len; n++) {
        uint8_t *p = exact_copy(a.data, n);
        mp_reader_init(&r, p, n);
        assert_int_equal(producer_state_decode(copy, &r), KAPPA_EPROTO);
        free(p);
    }
    encode_ps(copy, &b);
    assert_memory_equal(a.data, b.data, a.len);
    /* Byte flips never crash; what decodes re-encodes canonically. */
    for (size_t i = 0; i < a.len; i++) {
        uint8_t *p = exact_copy(a.data, a.len);
        p[i] ^= 0xff;
        mp_reader_init(&r, p, a.len);
        if (producer_state_decode(small, &r) == 0) {
            encode_ps(small, &b);
        }
        free(p);
    }
    /* Allocation failures: ENOMEM and no change, then success. */
    for (long fail = 1;; fail++) {
        struct producer_state *t = producer_state_new(64);
        int rv;
        mp_reader_init(&r, a.data, a.len);
        kappa_alloc_fail_after(fail);
        rv = producer_state_decode(t, &r);
        kappa_alloc_fail_after(0);
        producer_state_free(t);
        if (rv == 0) {
            break;
        }
        assert_int_equal(rv, KAPPA_ENOMEM);
    }
    buf_free(&a);
    buf_free(&b);
    producer_state_free(ps);
    producer_state_free(copy);
    producer_state_free(small);
}

/* Partition FSM without raft. */

static void set_crc(uint8_t *batch, size_t len)
{
    uint32_t crc = batch_crc_compute(batch, len);
    for (int i = 0; i < 4; i++) {
        batch[KAPPA_BATCH_OFF_CRC + i] = (uint8_t)(crc >> (8 * i));
    }
}

static int apply_raw(struct partition_fsm *p, const void *data, size_t len,
                     int64_t *base_offset)
{
    struct raft_fsm *fsm = partition_fsm_raft(p);
    struct raft_buffer buf;
    void *result = NULL;
    int rv;
    buf.base = exact_copy(data, len);
    buf.len = len;
    assert_int_equal(fsm->apply(fsm, &buf, &result), 0);
    rv = partition_fsm_result(result, base_offset);
    free(buf.base);
    return rv;
}

static void test_partition_apply(void **state)
{
    struct partition_fsm_options opts = {.verify_crc = 1, .track_max = 4};
    struct partition_fsm *p = partition_fsm_new(&opts);
    struct buf batch = {0};
    int64_t off = -1;
    size_t n;
    (void)state;
    assert_non_null(p);

    cluster_make_batch(&batch, 0, 1, 5, 0, 0, 3, 1);
    assert_int_equal(apply_raw(p, batch.data, batch.len, &off), 0);
    assert_int_equal(off, 0);
    assert_int_equal(partition_fsm_commit_offset(p), 3);
    /* Wrong base offset: rejected, no change. */
    assert_int_equal(apply_raw(p, batch.data, batch.len, &off), KAPPA_ECORRUPT);
    assert_int_equal(partition_fsm_commit_offset(p), 3);
    /* Good offset, flipped payload byte: CRC. */
    cluster_make_batch(&batch, 3, 1, 5, 0, 3, 2, 2);
    batch.data[batch.len - 1] ^= 1;
    assert_int_equal(apply_raw(p, batch.data, batch.len, &off), KAPPA_ECRC);
    batch.data[batch.len - 1] ^= 1;
    /* Trailing garbage after the batch, and a short entry. */
    assert_int_equal(buf_append(&batch, "x", 1), 0);
    assert_int_equal(apply_raw(p, batch.data, batch.len, &off), KAPPA_ECORRUPT);
    assert_int_equal(apply_raw(p, batch.data, 10, &off), KAPPA_ECORRUPT);
    assert_int_equal(apply_raw(p, batch.data, 0, &off), KAPPA_ECORRUPT);
    assert_int_equal(apply_raw(p, batch.data, batch.len - 1, &off), 0);
    assert_int_equal(off, 3);
    /* A control batch (bit 3) takes its offset, no producer state. */
    cluster_make_batch(&batch, 5, 2, -1, -1, -1, 1, 3);
    batch.data[25] |= KAPPA_BATCH_ATTR_CONTROL;
    set_crc(batch.data, batch.len);
    assert_int_equal(apply_raw(p, batch.data, batch.len, &off), 0);
    assert_int_equal(off, 5);
    assert_int_equal(partition_fsm_commit_offset(p), 6);
    assert_int_equal(partition_fsm_n_batches(p), 3);
    partition_fsm_applied(p, &n);
    assert_int_equal(n, 3);
    /* Every truncation of a batch is rejected. */
    for (size_t len = 0; len < batch.len; len++) {
        assert_int_not_equal(apply_raw(p, batch.data, len, &off), 0);
    }
    assert_int_equal(partition_fsm_commit_offset(p), 6);
    /* The tracking window slides. */
    for (int i = 0; i < 10; i++) {
        cluster_make_batch(&batch, 6 + i, 2, -1, -1, -1, 1, 4);
        assert_int_equal(apply_raw(p, batch.data, batch.len, &off), 0);
    }
    {
        const struct partition_applied *a = partition_fsm_applied(p, &n);
        assert_int_equal(n, 4);
        assert_int_equal(a[0].base_offset, 12);
        assert_int_equal(a[3].base_offset, 15);
    }
    buf_free(&batch);
    partition_fsm_free(p);
}

static void test_partition_manifest(void **state)
{
    struct partition_fsm *p = partition_fsm_new(NULL);
    struct partition_fsm *q = partition_fsm_new(NULL);
    struct raft_fsm *fsm = partition_fsm_raft(p);
    struct raft_buffer *bufs;
    unsigned n_bufs;
    struct buf batch = {0}, a = {0}, b = {0};
    const uint8_t *blob;
    size_t blob_len;
    int64_t off;
    (void)state;

    for (int i = 0; i < 8; i++) {
        cluster_make_batch(&batch, partition_fsm_commit_offset(p), 1, i % 3, 0,
                           i / 3 * 2, 2, (uint32_t)i);
        assert_int_equal(apply_raw(p, batch.data, batch.len, &off), 0);
    }
    assert_int_equal(partition_fsm_set_blob(p, "segments:0,100", 14), 0);
    assert_int_equal(
        partition_fsm_set_blob(p, batch.data, PARTITION_FSM_BLOB_BYTES_MAX + 1),
        KAPPA_ETOOBIG);
    assert_int_equal(fsm->snapshot(fsm, &bufs, &n_bufs), 0);
    assert_int_equal(n_bufs, 1);
    assert_int_equal(partition_fsm_encode(p, &a), 0);
    assert_int_equal(bufs[0].len, a.len);
    assert_memory_equal(bufs[0].base, a.data, a.len);
    assert_int_equal(fsm->snapshot_finalize(fsm, &bufs, &n_bufs), 0);

    /* Restore through raft's entry point (takes the buffer). */
    {
        struct raft_fsm *qf = partition_fsm_raft(q);
        struct raft_buffer rb;
        rb.len = a.len;
        rb.base = raft_malloc(a.len);
        memcpy(rb.base, a.data, a.len);
        assert_int_equal(qf->restore(qf, &rb), 0);
        rb.base = raft_malloc(3);
        rb.len = 3;
        memset(rb.base, 0xc1, 3);
        assert_int_equal(qf->restore(qf, &rb), RAFT_CORRUPT);
        raft_free(rb.base); /* raft frees on failure */
    }
    assert_int_equal(partition_fsm_encode(q, &b), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(partition_fsm_commit_offset(q), 16);
    blob = partition_fsm_blob(q, &blob_len);
    assert_int_equal(blob_len, 14);
    assert_memory_equal(blob, "segments:0,100", 14);

    for (size_t n = 0; n < a.len; n++) {
        uint8_t *t = exact_copy(a.data, n);
        assert_int_equal(partition_fsm_decode(q, t, n), KAPPA_EPROTO);
        free(t);
    }
    for (size_t i = 0; i < a.len; i++) {
        uint8_t *t = exact_copy(a.data, a.len);
        t[i] ^= 0x5a;
        (void)partition_fsm_decode(q, t, a.len);
        free(t);
    }
    /* Trailing bytes are refused. */
    assert_int_equal(buf_append(&a, "", 1), 0);
    assert_int_equal(partition_fsm_decode(q, a.data, a.len), KAPPA_EPROTO);
    a.len--;
    for (long fail = 1;; fail++) {
        int rv;
        kappa_alloc_fail_after(fail);
        rv = partition_fsm_decode(q, a.data, a.len);
        kappa_alloc_fail_after(0);
        if (rv == 0) {
            break;
        }
        assert_int_equal(rv, KAPPA_ENOMEM);
        b.len = 0;
    }
    buf_free(&batch);
    buf_free(&a);
    buf_free(&b);
    partition_fsm_free(p);
    partition_fsm_free(q);
}

/* Metadata FSM without raft. */

static int meta_apply(struct meta_fsm *m, uint64_t index, const struct buf *b,
                      int64_t *value)
{
    uint8_t *p = exact_copy(b->data, b->len);
    int rv = meta_fsm_apply_cmd(m, index, p, b->len, value);
    free(p);
    return rv;
}

static void register_brokers(struct meta_fsm *m, uint32_t n)
{
    struct buf cmd = {0};
    int64_t v;
    for (uint32_t id = 1; id <= n; id++) {
        char client[32], cluster[32];
        snprintf(client, sizeof client, "10.0.0.%u:9092", id);
        snprintf(cluster, sizeof cluster, "10.0.0.%u:9093", id);
        cmd.len = 0;
        assert_int_equal(
            meta_cmd_register_broker(&cmd, id, client, cluster, 1000), 0);
        assert_int_equal(meta_apply(m, id, &cmd, &v), 0);
    }
    buf_free(&cmd);
}

static void test_meta_commands(void **state)
{
    struct meta_fsm *m = meta_fsm_new();
    struct buf cmd = {0};
    struct meta_config_kv kv[] = {{"retention.ms", "1000"},
                                  {"cleanup.policy", "delete"}};
    const struct meta_topic *t;
    const struct meta_partition *part;
    int64_t v;
    uint32_t replicas[3];
    (void)state;

    register_brokers(m, 3);
    assert_int_equal(meta_fsm_n_brokers(m), 3);
    assert_string_equal(meta_fsm_broker(m, 2)->client_addr, "10.0.0.2:9092");

    assert_int_equal(meta_cmd_create_topic(&cmd, "orders", 6, 3, kv, 2, 0), 0);
    assert_int_equal(meta_apply(m, 10, &cmd, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(meta_apply(m, 11, &cmd, &v), KAPPA_ETOPIC_EXISTS);
    t = meta_fsm_topic(m, "orders", 6);
    assert_non_null(t);
    assert_int_equal(t->n_partitions, 6);
    assert_int_equal(t->created_index, 10);
    assert_string_equal(meta_topic_config(t, "retention.ms"), "1000");
    assert_string_equal(t->configs[0].key, "cleanup.policy"); /* sorted */

    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "bad/name", 1, 1, NULL, 0, 0),
                     0);
    assert_int_equal(meta_apply(m, 12, &cmd, &v), KAPPA_ETOPIC_NAME);
    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "x", 1, 4, NULL, 0, 0), 0);
    assert_int_equal(meta_apply(m, 12, &cmd, &v), KAPPA_EREPLICATION);
    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "x", 10001, 1, NULL, 0, 0), 0);
    assert_int_equal(meta_apply(m, 12, &cmd, &v), KAPPA_ETOOBIG);
    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "x", 0, 1, NULL, 0, 0), 0);
    assert_int_equal(meta_apply(m, 12, &cmd, &v), KAPPA_EINVAL);
    /* Heartbeat filter: only broker 3 is fresh. */
    cmd.len = 0;
    assert_int_equal(meta_cmd_broker_heartbeat(&cmd, 3, 5000), 0);
    assert_int_equal(meta_apply(m, 13, &cmd, &v), 0);
    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "fresh", 2, 1, NULL, 0, 4000),
                     0);
    assert_int_equal(meta_apply(m, 14, &cmd, &v), 0);
    assert_int_equal(meta_fsm_partition(m, "fresh", 5, 0)->replicas[0], 3);
    assert_int_equal(meta_fsm_partition(m, "fresh", 5, 1)->replicas[0], 3);
    cmd.len = 0;
    assert_int_equal(meta_cmd_broker_heartbeat(&cmd, 9, 5000), 0);
    assert_int_equal(meta_apply(m, 15, &cmd, &v), KAPPA_ENOENT);

    /* Alter: set one, delete one. */
    {
        struct meta_config_kv ch[] = {{"retention.ms", NULL},
                                      {"segment.bytes", "1024"}};
        cmd.len = 0;
        assert_int_equal(meta_cmd_alter_topic_config(&cmd, "orders", ch, 2), 0);
        assert_int_equal(meta_apply(m, 16, &cmd, &v), 0);
        t = meta_fsm_topic(m, "orders", 6);
        assert_null(meta_topic_config(t, "retention.ms"));
        assert_string_equal(meta_topic_config(t, "segment.bytes"), "1024");
        assert_int_equal(t->n_configs, 2);
    }

    /* Leader hints: newer epochs win, stale ones are ignored. */
    cmd.len = 0;
    part = meta_fsm_partition(m, "orders", 6, 1);
    assert_int_equal(
        meta_cmd_set_leader_hint(&cmd, "orders", 1, part->replicas[2], 5), 0);
    assert_int_equal(meta_apply(m, 17, &cmd, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(part->leader, part->replicas[2]);
    cmd.len = 0;
    assert_int_equal(
        meta_cmd_set_leader_hint(&cmd, "orders", 1, part->replicas[1], 4), 0);
    assert_int_equal(meta_apply(m, 18, &cmd, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(part->leader_epoch, 5);
    cmd.len = 0;
    assert_int_equal(meta_cmd_set_leader_hint(&cmd, "orders", 6, 1, 9), 0);
    assert_int_equal(meta_apply(m, 19, &cmd, &v), KAPPA_EBAD_PARTITION);
    cmd.len = 0;
    assert_int_equal(meta_cmd_set_leader_hint(&cmd, "nope", 0, 1, 9), 0);
    assert_int_equal(meta_apply(m, 19, &cmd, &v), KAPPA_EUNKNOWN_TOPIC);

    /* Decommission broker 3, move its replicas away: it becomes removed. */
    cmd.len = 0;
    assert_int_equal(meta_cmd_register_broker(&cmd, 4, "a:1", "a:2", 6000), 0);
    assert_int_equal(meta_apply(m, 20, &cmd, &v), 0);
    cmd.len = 0;
    assert_int_equal(meta_cmd_decommission_broker(&cmd, 3), 0);
    assert_int_equal(meta_apply(m, 21, &cmd, &v), 0);
    assert_int_equal(meta_fsm_broker(m, 3)->state, META_BROKER_DECOMMISSIONING);
    for (uint32_t p = 0; p < 6; p++) {
        replicas[0] = 1;
        replicas[1] = 2;
        replicas[2] = 4;
        cmd.len = 0;
        assert_int_equal(
            meta_cmd_reassign_partition(&cmd, "orders", p, replicas, 3), 0);
        assert_int_equal(meta_apply(m, 22 + p, &cmd, &v), 0);
    }
    assert_int_equal(meta_fsm_broker(m, 3)->state,
                     META_BROKER_DECOMMISSIONING); /* still hosts "fresh" */
    replicas[0] = 3;
    cmd.len = 0;
    assert_int_equal(meta_cmd_reassign_partition(&cmd, "x", 0, replicas, 1), 0);
    assert_int_equal(meta_apply(m, 30, &cmd, &v), KAPPA_EUNKNOWN_TOPIC);
    replicas[0] = 1;
    replicas[1] = 1;
    cmd.len = 0;
    assert_int_equal(meta_cmd_reassign_partition(&cmd, "fresh", 0, replicas, 2),
                     0);
    assert_int_equal(meta_apply(m, 30, &cmd, &v), KAPPA_EINVAL);
    cmd.len = 0;
    assert_int_equal(meta_cmd_delete_topic(&cmd, "fresh"), 0);
    assert_int_equal(meta_apply(m, 31, &cmd, &v), 0);
    assert_int_equal(meta_apply(m, 32, &cmd, &v), KAPPA_EUNKNOWN_TOPIC);
    assert_int_equal(meta_fsm_broker(m, 3)->state, META_BROKER_REMOVED);
    /* A removed broker is not eligible for new replicas. */
    replicas[0] = 3;
    cmd.len = 0;
    assert_int_equal(
        meta_cmd_reassign_partition(&cmd, "orders", 0, replicas, 1), 0);
    assert_int_equal(meta_apply(m, 33, &cmd, &v), KAPPA_ENOENT);

    /* Producer ids. */
    cmd.len = 0;
    assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, 100), 0);
    assert_int_equal(meta_apply(m, 34, &cmd, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(meta_apply(m, 35, &cmd, &v), 0);
    assert_int_equal(v, 100);
    cmd.len = 0;
    assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, 0), 0);
    assert_int_equal(meta_apply(m, 36, &cmd, &v), KAPPA_EINVAL);
    assert_int_equal(meta_fsm_next_producer_id(m), 200);

    buf_free(&cmd);
    meta_fsm_free(m);
}

/* Random bytes, random msgpack-looking prefixes and mutated valid commands
 * never crash and never change the state. */
static void test_meta_garbage(void **state)
{
    struct meta_fsm *m = meta_fsm_new();
    struct buf cmds[4] = {{0}};
    struct buf before = {0}, after = {0};
    uint64_t rng = 12345;
    int64_t v;
    (void)state;
    register_brokers(m, 3);
    assert_int_equal(meta_cmd_create_topic(&cmds[0], "t", 3, 2, NULL, 0, 0), 0);
    assert_int_equal(meta_apply(m, 5, &cmds[0], &v), 0);
    assert_int_equal(meta_fsm_encode(m, &before), 0);
    {
        struct meta_config_kv kv[] = {{"a", "b"}};
        uint32_t r[] = {1, 2};
        assert_int_equal(meta_cmd_alter_topic_config(&cmds[1], "t", kv, 1), 0);
        assert_int_equal(meta_cmd_reassign_partition(&cmds[2], "t", 0, r, 2),
                         0);
        assert_int_equal(meta_cmd_register_broker(&cmds[3], 7, "x", "y", 1), 0);
    }
    for (int round = 0; round < 20000; round++) {
        const struct buf *src = &cmds[round % 4];
        size_t len = src->len;
        uint8_t *p = exact_copy(src->data, len);
        int rv;
        if (round % 3 == 0) {
            for (size_t i = 0; i < len; i++) {
                p[i] = (uint8_t)sim_rand(&rng);
            }
        } else {
            p[sim_rand(&rng) % len] ^= (uint8_t)(1 + sim_rand(&rng) % 255);
            if (round % 3 == 2) {
                len = sim_rand(&rng) % len;
            }
        }
        rv = meta_fsm_apply_cmd(m, 100, p, len, &v);
        free(p);
        if (rv == 0) {
            /* A mutation may still be a valid command: start over. */
            meta_fsm_free(m);
            m = meta_fsm_new();
            assert_int_equal(meta_fsm_decode(m, before.data, before.len), 0);
        }
    }
    assert_int_equal(meta_fsm_encode(m, &after), 0);
    assert_int_equal(after.len, before.len);
    assert_memory_equal(after.data, before.data, before.len);
    for (int i = 0; i < 4; i++) {
        buf_free(&cmds[i]);
    }
    buf_free(&before);
    buf_free(&after);
    meta_fsm_free(m);
}

static void test_meta_snapshot_codec(void **state)
{
    struct meta_fsm *m = meta_fsm_new();
    struct meta_fsm *q = meta_fsm_new();
    struct buf cmd = {0}, a = {0}, b = {0};
    struct meta_config_kv kv[] = {{"k1", "v1"}, {"k0", ""}};
    int64_t v;
    (void)state;
    register_brokers(m, 5);
    for (int i = 0; i < 12; i++) {
        char name[16];
        snprintf(name, sizeof name, "topic-%02d", 11 - i);
        cmd.len = 0;
        assert_int_equal(meta_cmd_create_topic(&cmd, name, 1 + i % 4, 1 + i % 3,
                                               kv, i % 3, 0),
                         0);
        assert_int_equal(meta_apply(m, 100 + i, &cmd, &v), 0);
    }
    cmd.len = 0;
    assert_int_equal(meta_cmd_allocate_producer_ids(&cmd, 77), 0);
    assert_int_equal(meta_apply(m, 200, &cmd, &v), 0);
    assert_int_equal(meta_fsm_encode(m, &a), 0);
    assert_int_equal(meta_fsm_decode(q, a.data, a.len), 0);
    assert_int_equal(meta_fsm_encode(q, &b), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.data, b.data, a.len);
    assert_int_equal(meta_fsm_n_topics(q), 12);
    assert_string_equal(meta_fsm_topic_at(q, 0)->name, "topic-00");

    for (size_t n = 0; n < a.len; n++) {
        uint8_t *t = exact_copy(a.data, n);
        assert_int_equal(meta_fsm_decode(q, t, n), KAPPA_EPROTO);
        free(t);
    }
    for (size_t i = 0; i < a.len; i++) {
        uint8_t *t = exact_copy(a.data, a.len);
        t[i] ^= 0x81;
        if (meta_fsm_decode(q, t, a.len) == 0) {
            b.len = 0;
            assert_int_equal(meta_fsm_encode(q, &b), 0);
        }
        free(t);
    }
    for (long fail = 1;; fail++) {
        int rv;
        kappa_alloc_fail_after(fail);
        rv = meta_fsm_decode(q, a.data, a.len);
        kappa_alloc_fail_after(0);
        if (rv == 0) {
            break;
        }
        assert_int_equal(rv, KAPPA_ENOMEM);
    }
    /* Apply under allocation failure: ENOMEM leaves the state unchanged. */
    cmd.len = 0;
    assert_int_equal(meta_cmd_create_topic(&cmd, "oom", 50, 3, kv, 2, 0), 0);
    for (long fail = 1;; fail++) {
        int rv;
        b.len = 0;
        kappa_alloc_fail_after(fail);
        rv = meta_apply(m, 300, &cmd, &v);
        kappa_alloc_fail_after(0);
        if (rv == 0) {
            break;
        }
        assert_int_equal(rv, KAPPA_ENOMEM);
        assert_int_equal(meta_fsm_encode(m, &b), 0);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
    }
    buf_free(&cmd);
    buf_free(&a);
    buf_free(&b);
    meta_fsm_free(m);
    meta_fsm_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_producer_sequences),
        cmocka_unit_test(test_producer_wraparound),
        cmocka_unit_test(test_producer_eviction),
        cmocka_unit_test(test_producer_codec),
        cmocka_unit_test(test_partition_apply),
        cmocka_unit_test(test_partition_manifest),
        cmocka_unit_test(test_meta_commands),
        cmocka_unit_test(test_meta_garbage),
        cmocka_unit_test(test_meta_snapshot_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
