/* The raft_fixture wrapper for simulation tests; see cluster.h. */
#include "cluster.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/batch.h"
#include "common/crc32c.h"
#include "common/err.h"

/* Servers are reached by index; cluster_init asserts n fits. */
_Static_assert(offsetof(struct cluster, f) == 0,
               "the fixture hook finds the cluster from the fixture");

void cluster_init(struct cluster *c, unsigned n, enum cluster_kind kind,
                  const struct partition_fsm_options *opts)
{
    struct raft_configuration conf;
    assert_true(n >= 1 && n <= CLUSTER_SERVERS_MAX);
    memset(c, 0, sizeof *c);
    c->n = n;
    c->kind = kind;
    c->barrier_leader = n;
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < n; i++) {
        struct raft_fsm *fsm;
        if (kind == CLUSTER_PARTITION) {
            c->parts[i] = partition_fsm_new(opts);
            assert_non_null(c->parts[i]);
            fsm = partition_fsm_raft(c->parts[i]);
        } else {
            c->metas[i] = meta_fsm_new();
            assert_non_null(c->metas[i]);
            fsm = meta_fsm_raft(c->metas[i]);
        }
        assert_int_equal(raft_fixture_grow(&c->f, fsm), 0);
        if (kind == CLUSTER_META) {
            meta_fsm_attach(c->metas[i], raft_fixture_get(&c->f, i));
        }
    }
    assert_int_equal(raft_fixture_configuration(&c->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
}

void cluster_close(struct cluster *c)
{
    raft_fixture_close(&c->f);
    for (unsigned i = 0; i < c->n; i++) {
        partition_fsm_free(c->parts[i]);
        meta_fsm_free(c->metas[i]);
    }
}

struct raft *cluster_raft(struct cluster *c, unsigned i)
{
    return raft_fixture_get(&c->f, i);
}

struct raft_fixture *cluster_fixture(struct cluster *c)
{
    return &c->f;
}

void cluster_set_snapshot(struct cluster *c, unsigned threshold,
                          unsigned trailing)
{
    for (unsigned i = 0; i < c->n; i++) {
        raft_set_snapshot_threshold(cluster_raft(c, i), threshold);
        raft_set_snapshot_trailing(cluster_raft(c, i), trailing);
    }
}

static void fixture_hook(struct raft_fixture *f,
                         struct raft_fixture_event *event)
{
    struct cluster *c = (struct cluster *)f;
    (void)event;
    if (c->hook != NULL) {
        c->hook(c);
    }
}

void cluster_set_hook(struct cluster *c, void (*hook)(struct cluster *c))
{
    c->hook = hook;
    raft_fixture_hook(&c->f, hook != NULL ? fixture_hook : NULL);
}

void cluster_set_latency(struct cluster *c, unsigned i, unsigned network_ms,
                         unsigned disk_ms)
{
    raft_fixture_set_network_latency(&c->f, i, network_ms);
    raft_fixture_set_disk_latency(&c->f, i, disk_ms);
}

unsigned cluster_wait_leader(struct cluster *c)
{
    assert_true(raft_fixture_step_until_has_leader(&c->f, CLUSTER_WAIT_MS));
    return raft_fixture_leader_index(&c->f);
}

unsigned cluster_leader(struct cluster *c)
{
    return raft_fixture_leader_index(&c->f);
}

void cluster_step_ms(struct cluster *c, unsigned ms)
{
    raft_fixture_step_until_elapsed(&c->f, ms);
}

static void apply_cb(struct raft_apply *apply, int status, void *result)
{
    struct cluster_req *req = apply->data;
    req->done = 1;
    req->status = status;
    req->result = result;
    if (req->orphan) {
        free(req);
    }
}

static void barrier_cb(struct raft_barrier *barrier, int status)
{
    struct cluster_req *req = barrier->data;
    req->done = 1;
    req->status = status;
    if (req->orphan) {
        free(req);
    }
}

static struct cluster_req *req_new(void)
{
    struct cluster_req *req = calloc(1, sizeof *req);
    assert_non_null(req);
    return req;
}

void cluster_release(struct cluster_req *req)
{
    if (req == NULL) {
        return;
    }
    if (req->done) {
        free(req);
    } else {
        req->orphan = 1;
    }
}

struct cluster_req *cluster_propose(struct cluster *c, unsigned i,
                                    const void *data, size_t len)
{
    struct cluster_req *req = req_new();
    struct raft_buffer buf;
    buf.len = len;
    buf.base = raft_malloc(len);
    assert_non_null(buf.base);
    memcpy(buf.base, data, len);
    req->u.apply.data = req;
    if (raft_apply(cluster_raft(c, i), &req->u.apply, &buf, 1, apply_cb) != 0) {
        raft_free(buf.base);
        free(req);
        return NULL;
    }
    return req;
}

static bool req_is_done(struct raft_fixture *f, void *arg)
{
    (void)f;
    return ((struct cluster_req *)arg)->done != 0;
}

int cluster_wait(struct cluster *c, struct cluster_req *req, unsigned max_ms)
{
    return raft_fixture_step_until(&c->f, req_is_done, req, max_ms);
}

/* Steps until server i has applied everything in its log. */
static bool all_applied(struct raft_fixture *f, void *arg)
{
    struct raft *r = raft_fixture_get(f, (unsigned)(uintptr_t)arg);
    return raft_last_applied(r) == raft_last_index(r);
}

unsigned cluster_leader_ready(struct cluster *c)
{
    struct cluster_req *req;
    struct raft *r;
    raft_term term;
    unsigned l;
    int status;

    if (!raft_fixture_step_until_has_leader(&c->f, CLUSTER_WAIT_MS)) {
        return c->n;
    }
    l = raft_fixture_leader_index(&c->f);
    r = cluster_raft(c, l);
    term = r->current_term;
    if (c->barrier_leader != l || c->barrier_term != term) {
        req = req_new();
        req->u.barrier.data = req;
        if (raft_barrier(r, &req->u.barrier, barrier_cb) != 0) {
            free(req);
            return c->n;
        }
        cluster_wait(c, req, CLUSTER_WAIT_MS);
        status = req->done ? req->status : -1;
        cluster_release(req);
        if (status != 0) {
            return c->n;
        }
    }
    /* An earlier proposal whose wait gave up may still be in the log. */
    if (!raft_fixture_step_until(&c->f, all_applied, (void *)(uintptr_t)l,
                                 CLUSTER_WAIT_MS) ||
        raft_state(r) != RAFT_LEADER || r->current_term != term) {
        return c->n;
    }
    c->barrier_leader = l;
    c->barrier_term = term;
    return l;
}

struct converge_arg {
    struct cluster *c;
    raft_index index;
};

static bool converged(struct raft_fixture *f, void *arg)
{
    struct converge_arg *a = arg;
    for (unsigned i = 0; i < a->c->n; i++) {
        if (raft_fixture_alive(f, i) &&
            raft_last_applied(raft_fixture_get(f, i)) < a->index) {
            return false;
        }
    }
    return true;
}

void cluster_converge(struct cluster *c)
{
    struct converge_arg a = {c, 0};
    unsigned l = cluster_leader_ready(c);
    assert_int_not_equal(l, c->n);
    a.index = raft_last_index(cluster_raft(c, l));
    assert_true(
        raft_fixture_step_until(&c->f, converged, &a, 2 * CLUSTER_WAIT_MS));
}

void cluster_kill(struct cluster *c, unsigned i)
{
    raft_fixture_kill(&c->f, i);
}

void cluster_revive(struct cluster *c, unsigned i)
{
    raft_fixture_revive(&c->f, i);
}

int cluster_alive(struct cluster *c, unsigned i)
{
    return raft_fixture_alive(&c->f, i);
}

void cluster_isolate(struct cluster *c, unsigned i)
{
    for (unsigned j = 0; j < c->n; j++) {
        if (j != i) {
            raft_fixture_saturate(&c->f, i, j);
            raft_fixture_saturate(&c->f, j, i);
        }
    }
}

void cluster_heal(struct cluster *c)
{
    for (unsigned i = 0; i < c->n; i++) {
        for (unsigned j = 0; j < c->n; j++) {
            if (i != j) {
                raft_fixture_desaturate(&c->f, i, j);
                raft_fixture_reconnect(&c->f, i, j);
            }
        }
    }
}

struct partition_fsm *cluster_part(struct cluster *c, unsigned i)
{
    return c->parts[i];
}

struct meta_fsm *cluster_meta(struct cluster *c, unsigned i)
{
    return c->metas[i];
}

void cluster_make_batch(struct buf *out, int64_t base_offset, uint64_t term,
                        int64_t producer_id, int16_t producer_epoch,
                        int32_t base_sequence, uint32_t n_records, uint32_t tag)
{
    struct batch_builder b;
    char key[32];
    char value[64];
    batch_builder_init(&b);
    for (uint32_t k = 0; k < n_records; k++) {
        int key_len = snprintf(key, sizeof key, "k%u", k);
        int value_len = snprintf(value, sizeof value, "tag %u record %u of %u",
                                 tag, k, n_records);
        assert_int_equal(batch_builder_add(&b, key, (uint32_t)key_len, value,
                                           (uint32_t)value_len, NULL, 0,
                                           1000 + k),
                         0);
    }
    assert_int_equal(batch_builder_finish(&b, KAPPA_COMPRESSION_NONE,
                                          producer_id, producer_epoch,
                                          base_sequence),
                     0);
    batch_set_base_offset(b.buf.data, base_offset);
    batch_set_term(b.buf.data, term);
    out->len = 0;
    assert_int_equal(buf_append(out, b.buf.data, b.buf.len), 0);
    batch_builder_free(&b);
}

/* The CRC of the entry at base_offset in server l's history, or 0. */
static uint32_t tracked_crc(struct cluster *c, unsigned l, int64_t offset)
{
    size_t n;
    const struct partition_applied *a = partition_fsm_applied(c->parts[l], &n);
    for (size_t i = 0; i < n; i++) {
        if (a[i].base_offset == offset) {
            return a[i].crc;
        }
    }
    return 0;
}

int cluster_produce(struct cluster *c, int64_t producer_id, int16_t epoch,
                    int32_t base_sequence, uint32_t n_records, uint32_t tag,
                    int64_t *base_offset, uint32_t *crc)
{
    struct buf batch = {0};
    struct cluster_req *req;
    struct partition_fsm *p;
    int64_t offset, result_offset;
    unsigned l;
    int rv;

    l = cluster_leader_ready(c);
    if (l == c->n) {
        return KAPPA_ENOT_LEADER;
    }
    p = c->parts[l];
    rv = producer_state_check(partition_fsm_producers(p), producer_id, epoch,
                              base_sequence, n_records, &offset);
    if (rv == KAPPA_EDUPLICATE) {
        *base_offset = offset;
        if (crc != NULL) {
            *crc = tracked_crc(c, l, offset);
        }
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    offset = partition_fsm_commit_offset(p);
    cluster_make_batch(&batch, offset, cluster_raft(c, l)->current_term,
                       producer_id, epoch, base_sequence, n_records, tag);
    req = cluster_propose(c, l, batch.data, batch.len);
    if (crc != NULL) {
        *crc = crc32c(batch.data, batch.len);
    }
    buf_free(&batch);
    if (req == NULL) {
        return KAPPA_ENOT_LEADER;
    }
    if (!cluster_wait(c, req, CLUSTER_WAIT_MS)) {
        cluster_release(req);
        return KAPPA_ETIMEDOUT;
    }
    rv = req->status;
    if (rv == 0) {
        assert_int_equal(partition_fsm_result(req->result, &result_offset), 0);
        assert_int_equal(result_offset, offset);
        *base_offset = offset;
    }
    cluster_release(req);
    return rv == 0 ? 0 : KAPPA_ENOT_LEADER;
}

unsigned cluster_produce_pipelined(struct cluster *c, unsigned k, uint32_t tag)
{
    struct cluster_req **reqs = calloc(k, sizeof *reqs);
    struct buf batch = {0};
    unsigned l = cluster_leader_ready(c);
    unsigned n_ok = 0;
    int64_t offset;

    assert_non_null(reqs);
    if (l == c->n) {
        free(reqs);
        return 0;
    }
    offset = partition_fsm_commit_offset(c->parts[l]);
    for (unsigned j = 0; j < k; j++) {
        uint32_t n_records = 1 + (tag + j) % 7;
        cluster_make_batch(&batch, offset, cluster_raft(c, l)->current_term,
                           PRODUCER_ID_NONE, -1, -1, n_records, tag + j);
        reqs[j] = cluster_propose(c, l, batch.data, batch.len);
        offset += n_records;
    }
    buf_free(&batch);
    for (unsigned j = 0; j < k; j++) {
        int64_t result_offset;
        if (reqs[j] != NULL && cluster_wait(c, reqs[j], CLUSTER_WAIT_MS) &&
            reqs[j]->status == 0) {
            assert_int_equal(
                partition_fsm_result(reqs[j]->result, &result_offset), 0);
            n_ok++;
        }
        cluster_release(reqs[j]);
    }
    free(reqs);
    return n_ok;
}

/* Two tracked histories agree wherever both have an entry. */
static void check_histories(struct partition_fsm *a, struct partition_fsm *b)
{
    size_t na, nb, i = 0, j = 0;
    const struct partition_applied *ha = partition_fsm_applied(a, &na);
    const struct partition_applied *hb = partition_fsm_applied(b, &nb);
    while (i < na && j < nb) {
        if (ha[i].base_offset < hb[j].base_offset) {
            i++;
        } else if (ha[i].base_offset > hb[j].base_offset) {
            j++;
        } else {
            assert_int_equal(ha[i].record_count, hb[j].record_count);
            assert_int_equal(ha[i].crc, hb[j].crc);
            i++;
            j++;
        }
    }
    for (i = 1; i < na; i++) {
        assert_int_equal(ha[i - 1].base_offset + ha[i - 1].record_count,
                         ha[i].base_offset);
    }
}

void cluster_check_partitions_equal(struct cluster *c)
{
    struct buf first = {0};
    unsigned ref = c->n;
    for (unsigned i = 0; i < c->n; i++) {
        struct buf snap = {0};
        if (!cluster_alive(c, i)) {
            continue;
        }
        assert_int_equal(partition_fsm_encode(c->parts[i], &snap), 0);
        if (ref == c->n) {
            ref = i;
            first = snap;
            continue;
        }
        assert_int_equal(partition_fsm_commit_offset(c->parts[i]),
                         partition_fsm_commit_offset(c->parts[ref]));
        assert_int_equal(snap.len, first.len);
        assert_memory_equal(snap.data, first.data, snap.len);
        check_histories(c->parts[ref], c->parts[i]);
        buf_free(&snap);
    }
    buf_free(&first);
}

int cluster_meta_apply(struct cluster *c, const struct buf *cmd, int64_t *value)
{
    struct cluster_req *req;
    int64_t v = 0;
    int rv;
    unsigned l = cluster_leader_ready(c);
    if (l == c->n) {
        return KAPPA_ENOT_LEADER;
    }
    req = cluster_propose(c, l, cmd->data, cmd->len);
    if (req == NULL) {
        return KAPPA_ENOT_LEADER;
    }
    if (!cluster_wait(c, req, CLUSTER_WAIT_MS)) {
        cluster_release(req);
        return KAPPA_ETIMEDOUT;
    }
    rv =
        req->status != 0 ? KAPPA_ENOT_LEADER : meta_fsm_result(req->result, &v);
    cluster_release(req);
    if (value != NULL) {
        *value = v;
    }
    return rv;
}

void cluster_check_metas_equal(struct cluster *c)
{
    struct buf first = {0};
    int have_first = 0;
    for (unsigned i = 0; i < c->n; i++) {
        struct buf snap = {0};
        if (!cluster_alive(c, i)) {
            continue;
        }
        assert_int_equal(meta_fsm_encode(c->metas[i], &snap), 0);
        if (!have_first) {
            first = snap;
            have_first = 1;
            continue;
        }
        assert_int_equal(snap.len, first.len);
        assert_memory_equal(snap.data, first.data, snap.len);
        buf_free(&snap);
    }
    buf_free(&first);
}

uint64_t sim_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t sim_seed(const char *test_name)
{
    const char *env = getenv("KAPPA_TEST_SEED");
    uint64_t seed;
    if (env != NULL && *env != '\0') {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^
               ((uint64_t)getpid() << 32);
    }
    if (seed == 0) {
        seed = 1; /* xorshift needs a non-zero state */
    }
    printf("%s: seed %llu (replay with KAPPA_TEST_SEED=%llu)\n", test_name,
           (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    return seed;
}
