/* Idempotent-producer bookkeeping for one partition (Kafka semantics): per
 * producer id, its epoch and its last PRODUCER_STATE_BATCHES batches, so the
 * leader can reject gaps, fence stale epochs and answer a retried batch with
 * the offset it was first written at. Pure: no clock, no I/O. */
#ifndef KAPPA_CONSENSUS_PRODUCER_STATE_H
#define KAPPA_CONSENSUS_PRODUCER_STATE_H

#include <stdint.h>

#include "common/mp.h"

/* Batches remembered per producer (Kafka keeps 5: the producer may have at
 * most 5 requests in flight). */
#define PRODUCER_STATE_BATCHES 5
/* Ceiling for max_producers (bounds decoding and memory). */
#define PRODUCER_STATE_PRODUCERS_MAX (1u << 20)
/* Default per-partition limit. */
#define PRODUCER_STATE_PRODUCERS_DEFAULT 4096u

/* The producer id of a non-idempotent batch. */
#define PRODUCER_ID_NONE (-1)

struct producer_state;

/* One remembered batch. last_sequence wraps at INT32_MAX like Kafka's. */
struct producer_batch {
    int32_t first_sequence;
    int32_t last_sequence;
    int64_t base_offset;
    uint32_t record_count;
};

/* Returns an empty state holding at most max_producers producers
 * (1 .. PRODUCER_STATE_PRODUCERS_MAX), or NULL when out of memory or
 * max_producers is out of range. */
struct producer_state *producer_state_new(uint32_t max_producers);

/* Frees the state; NULL is a no-op. */
void producer_state_free(struct producer_state *ps);

/* Classifies a batch against the state, without changing it. Returns
 *   0                 new and in order (or producer_id is PRODUCER_ID_NONE,
 *                     or the producer is unknown: like Kafka, the first batch
 *                     seen of a producer may have any sequence);
 *   KAPPA_EDUPLICATE  same epoch and the same (first, last) sequence as one
 *                     of the remembered batches; *dup_base_offset is set to
 *                     the offset that batch was written at;
 *   KAPPA_ESEQUENCE   a gap or an out-of-order sequence, or a new epoch
 *                     whose first sequence is not 0;
 *   KAPPA_EFENCED     epoch older than the producer's current epoch;
 *   KAPPA_EINVAL      producer_id < -1, epoch or sequence negative, or
 *                     record_count 0 or above KAPPA_BATCH_RECORDS_MAX.
 * dup_base_offset may be NULL. */
int producer_state_check(const struct producer_state *ps, int64_t producer_id,
                         int16_t epoch, int32_t base_sequence,
                         uint32_t record_count, int64_t *dup_base_offset);

/* Records a batch once it is part of the log (applied). Deterministic: every
 * replica that records the same batches holds the same state. A batch with
 * an older epoch than the producer's is ignored (the log may hold one from a
 * deposed leader); a newer epoch replaces the producer's history. When the
 * table is full, the least recently used producer is evicted first: the one
 * whose newest batch has the lowest base offset (ties: lowest id), so
 * eviction is the same on every replica. Its duplicates can then no longer
 * be detected, and its next batch is accepted with any sequence (Kafka's
 * behaviour after producer expiry). producer_id PRODUCER_ID_NONE is a
 * no-op. Returns 0, KAPPA_EINVAL (as for check) or KAPPA_ENOMEM (state
 * unchanged). */
int producer_state_record(struct producer_state *ps, int64_t producer_id,
                          int16_t epoch, int32_t base_sequence,
                          uint32_t record_count, int64_t base_offset);

/* Number of producers held. */
uint32_t producer_state_count(const struct producer_state *ps);

/* Looks a producer up. Returns 0 and fills *epoch, batches (oldest first,
 * PRODUCER_STATE_BATCHES slots) and *n_batches, or KAPPA_ENOENT. Any output
 * may be NULL. */
int producer_state_get(const struct producer_state *ps, int64_t producer_id,
                       int16_t *epoch, struct producer_batch *batches,
                       uint32_t *n_batches);

/* Writes the state as one msgpack value (format at the top of
 * producer_state.c). Equal states give identical bytes. Errors are sticky
 * in w->err. */
void producer_state_encode(const struct producer_state *ps,
                           struct mp_writer *w);

/* Reads one value written by producer_state_encode and, only if all of it
 * is valid, replaces ps's contents with it. Returns 0, KAPPA_EPROTO
 * (malformed, including more producers than ps's limit; ps unchanged) or
 * KAPPA_ENOMEM (ps unchanged). */
int producer_state_decode(struct producer_state *ps, struct mp_reader *r);

/* Kafka's sequence arithmetic: seq + inc, wrapping from INT32_MAX to 0.
 * seq and inc must be non-negative. */
int32_t producer_sequence_add(int32_t seq, int32_t inc);

#endif /* KAPPA_CONSENSUS_PRODUCER_STATE_H */
