/* Simulation support: a raft_fixture cluster (virtual time, in-memory I/O)
 * whose servers run the partition or the metadata FSM, behind one small API
 * so tests never touch the fixture directly (STYLE.md section 8). Every
 * helper fails the cmocka test on an unexpected error. */
#ifndef KAPPA_TESTS_SIM_CLUSTER_H
#define KAPPA_TESTS_SIM_CLUSTER_H

#include <raft.h>
#include <raft/fixture.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "consensus/meta_fsm.h"
#include "consensus/partition_fsm.h"

#define CLUSTER_SERVERS_MAX RAFT_FIXTURE_MAX_SERVERS
/* Default bound on virtual time for one wait. */
#define CLUSTER_WAIT_MS 30000

enum cluster_kind {
    CLUSTER_PARTITION,
    CLUSTER_META,
};

/* One raft_apply or raft_barrier. Released with cluster_release: freed at
 * once if its callback ran, else by the callback (raft always calls back,
 * with RAFT_LEADERSHIPLOST or RAFT_SHUTDOWN at the latest). */
struct cluster_req {
    union {
        struct raft_apply apply;
        struct raft_barrier barrier;
    } u;
    int done;
    int orphan;
    int status;
    void *result;
};

struct cluster {
    struct raft_fixture f;
    unsigned n;
    enum cluster_kind kind;
    struct partition_fsm *parts[CLUSTER_SERVERS_MAX];
    struct meta_fsm *metas[CLUSTER_SERVERS_MAX];
    raft_term barrier_term; /* term of the last leader barrier done */
    unsigned barrier_leader;
    void (*hook)(struct cluster *c);
};

/* Builds n servers (1..8), all voters, bootstrapped and started. opts is
 * for CLUSTER_PARTITION (may be NULL). */
void cluster_init(struct cluster *c, unsigned n, enum cluster_kind kind,
                  const struct partition_fsm_options *opts);
void cluster_close(struct cluster *c);

struct raft *cluster_raft(struct cluster *c, unsigned i);
struct raft_fixture *cluster_fixture(struct cluster *c);

/* Snapshot knobs on every server. */
void cluster_set_snapshot(struct cluster *c, unsigned threshold,
                          unsigned trailing);

/* Steps until there is a stable leader; returns its index. */
unsigned cluster_wait_leader(struct cluster *c);
/* The current leader's index, or c->n. */
unsigned cluster_leader(struct cluster *c);
void cluster_step_ms(struct cluster *c, unsigned ms);

/* Proposes one entry (data is copied) on server i and returns the request;
 * NULL if raft_apply refused (not leader). */
struct cluster_req *cluster_propose(struct cluster *c, unsigned i,
                                    const void *data, size_t len);
/* Steps until req is done or max_ms pass; returns 1 when done. */
int cluster_wait(struct cluster *c, struct cluster_req *req, unsigned max_ms);
/* Gives req back (see struct cluster_req); NULL is a no-op. */
void cluster_release(struct cluster_req *req);
/* Latencies of server i from now on. */
void cluster_set_latency(struct cluster *c, unsigned i, unsigned network_ms,
                         unsigned disk_ms);
/* Calls hook(c) after every fixture event (NULL: none). */
void cluster_set_hook(struct cluster *c, void (*hook)(struct cluster *c));
/* Issues a barrier on the leader (once per leader term) and waits for it,
 * so the leader has applied its whole log: the moment a new leader may
 * start to assign offsets or answer (docs/design.md, decision 4). Returns
 * the leader index, or c->n if it could not. */
unsigned cluster_leader_ready(struct cluster *c);

/* Steps until every alive server has applied the leader's last index. */
void cluster_converge(struct cluster *c);

/* Faults. */
void cluster_kill(struct cluster *c, unsigned i);
void cluster_revive(struct cluster *c, unsigned i);
/* Drops every message to and from server i. */
void cluster_isolate(struct cluster *c, unsigned i);
void cluster_heal(struct cluster *c);
int cluster_alive(struct cluster *c, unsigned i);

/* Partition FSM helpers. */
struct partition_fsm *cluster_part(struct cluster *c, unsigned i);

/* Builds a record batch of n_records at base_offset with the producer
 * fields; out is reset first. The payload depends on tag. */
void cluster_make_batch(struct buf *out, int64_t base_offset, uint64_t term,
                        int64_t producer_id, int16_t producer_epoch,
                        int32_t base_sequence, uint32_t n_records,
                        uint32_t tag);

/* The broker's produce path in miniature: on the ready leader, checks the
 * producer state, assigns the next offset, proposes and waits. Returns 0
 * with *base_offset (also for a duplicate, with its original offset),
 * KAPPA_ESEQUENCE / KAPPA_EFENCED / KAPPA_EINVAL, or KAPPA_ENOT_LEADER /
 * KAPPA_ETIMEDOUT when the cluster could not commit it. *crc (may be NULL)
 * gets the CRC of the entry as stored. */
int cluster_produce(struct cluster *c, int64_t producer_id, int16_t epoch,
                    int32_t base_sequence, uint32_t n_records, uint32_t tag,
                    int64_t *base_offset, uint32_t *crc);

/* Proposes k non-idempotent batches back to back (pipelined) and waits for
 * all; returns how many were acknowledged. */
unsigned cluster_produce_pipelined(struct cluster *c, unsigned k, uint32_t tag);

/* Checks that every alive server has the same partition state: commit
 * offset, producer state, manifest bytes, and the same tracked batches
 * where their histories overlap. */
void cluster_check_partitions_equal(struct cluster *c);

/* Metadata FSM helpers. */
struct meta_fsm *cluster_meta(struct cluster *c, unsigned i);
/* Applies a command on the ready leader and waits; returns the result code
 * and sets *value (may be NULL). A command the cluster could not commit
 * gives KAPPA_ENOT_LEADER or KAPPA_ETIMEDOUT. */
int cluster_meta_apply(struct cluster *c, const struct buf *cmd,
                       int64_t *value);
/* Checks that every alive server's metadata snapshot bytes are equal. */
void cluster_check_metas_equal(struct cluster *c);

/* A reproducible random generator (xorshift64*). */
uint64_t sim_rand(uint64_t *state);
/* The seed of a randomized test: KAPPA_TEST_SEED if set, else derived from
 * the clock; printed either way. */
uint64_t sim_seed(const char *test_name);

#endif /* KAPPA_TESTS_SIM_CLUSTER_H */
