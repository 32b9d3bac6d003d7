/* The Raft state machine of one partition: applying a record batch advances
 * the commit offset (high watermark) and the producer state; the snapshot is
 * a small manifest, not the data. Pure: no clock, no I/O. */
#ifndef KAPPA_CONSENSUS_PARTITION_FSM_H
#define KAPPA_CONSENSUS_PARTITION_FSM_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "producer_state.h"

/* Largest caller blob carried in the manifest (e.g. the segment list). */
#define PARTITION_FSM_BLOB_BYTES_MAX (64u * 1024)
/* Largest applied-batch history kept for tests. */
#define PARTITION_FSM_TRACK_MAX (1u << 20)

struct partition_fsm_options {
    uint32_t max_producers; /* 0: PRODUCER_STATE_PRODUCERS_DEFAULT */
    int verify_crc;         /* also check each batch's CRC on apply */
    uint32_t track_max;     /* >0: remember the last track_max applied
                               batches (tests compare replicas with it) */
};

/* One applied batch, as remembered when tracking is on. crc is CRC-32C of
 * the whole entry, so it covers the rewritten base offset and term too. */
struct partition_applied {
    int64_t base_offset;
    uint32_t record_count;
    uint32_t crc;
};

struct partition_fsm;

/* Returns a new FSM at offset 0 with empty producer state, or NULL (out of
 * memory or bad options). opts may be NULL for defaults. */
struct partition_fsm *
partition_fsm_new(const struct partition_fsm_options *opts);

/* Frees it; NULL is a no-op. raft must be closed first. */
void partition_fsm_free(struct partition_fsm *p);

/* The struct raft_fsm (version 2) to pass to raft_init or raft_fixture_grow;
 * owned by p, valid until partition_fsm_free.
 *
 * apply: the entry must be exactly one batch whose base offset is at or
 * above the commit offset (the gap holds control batches raft never
 * applies): a record batch, or a control batch (KAPPA_BATCH_ATTR_CONTROL
 * in common/batch.h: a Raft barrier or configuration entry stored in the
 * segment store), which takes its offset but carries no producer state. It sets
 * *result to a packed value (not a pointer, nothing to free): decode it with
 * partition_fsm_result. A well-formed batch advances the commit offset to
 * base_offset + record_count and records its producer fields (without checking
 * them: the leader checked before proposing, and an entry in the log is
 * committed whatever it holds). A malformed entry or an offset mismatch leaves
 * the state unchanged and yields an error result, identically on every replica.
 * apply returns RAFT_NOMEM only when out of memory (state unchanged; raft
 * retries).
 *
 * snapshot: the manifest (format in partition_fsm.c) in one raft_malloc'd
 * buffer, freed by snapshot_finalize. restore: decodes a manifest and
 * replaces the whole state, taking ownership of the buffer on success. */
struct raft_fsm *partition_fsm_raft(struct partition_fsm *p);

/* Decodes an apply result: returns 0 with *base_offset set, or the KAPPA_E*
 * code the entry was rejected with (KAPPA_ECORRUPT, KAPPA_ECRC). */
int partition_fsm_result(const void *result, int64_t *base_offset);

/* Offset after the last applied batch: the high watermark. */
int64_t partition_fsm_commit_offset(const struct partition_fsm *p);

/* Batches applied so far (carried across snapshots). */
uint64_t partition_fsm_n_batches(const struct partition_fsm *p);

/* The producer state; owned by p, valid until the next apply or restore. */
const struct producer_state *
partition_fsm_producers(const struct partition_fsm *p);

/* Copies the caller's opaque blob (at most PARTITION_FSM_BLOB_BYTES_MAX)
 * into p; every later snapshot carries it. Returns 0, KAPPA_ETOOBIG or
 * KAPPA_ENOMEM (old blob kept). */
int partition_fsm_set_blob(struct partition_fsm *p, const void *data,
                           size_t len);

/* The current blob (set, or from the last restored snapshot); owned by p,
 * valid until the next set_blob, restore or free. */
const uint8_t *partition_fsm_blob(const struct partition_fsm *p, size_t *len);

/* Encodes the manifest into out (appending), as the snapshot would. Returns
 * 0 or KAPPA_ENOMEM. */
int partition_fsm_encode(const struct partition_fsm *p, struct buf *out);

/* Decodes a manifest and, only if valid, replaces p's state. Returns 0,
 * KAPPA_EPROTO or KAPPA_ENOMEM (p unchanged). */
int partition_fsm_decode(struct partition_fsm *p, const void *data, size_t len);

/* The tracked history, oldest first: at most track_max entries, all
 * applied since the FSM was created or last restored. Owned by p, valid
 * until the next apply, restore or free. */
const struct partition_applied *
partition_fsm_applied(const struct partition_fsm *p, size_t *n);

#endif /* KAPPA_CONSENSUS_PARTITION_FSM_H */
