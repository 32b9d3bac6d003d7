/* How rio stores a Raft entry as one record batch, and back:
 *   - RAFT_COMMAND of a partition group: the entry IS a record batch whose
 *     base offset and term the leader set before raft_apply; stored as is.
 *   - RAFT_COMMAND of a wrapped (metadata) group: a one-record batch whose
 *     value is the payload (null key).
 *   - RAFT_BARRIER / RAFT_CHANGE: a control batch (KAPPA_BATCH_ATTR_CONTROL)
 *     with one record, key = the type byte, value = the payload (empty for a
 *     barrier, whose 8 raft bytes are meaningless and uninitialised).
 * Built batches have timestamp 0 and producer fields -1, so every replica
 * stores the same bytes. Pure functions. */
#ifndef KAPPA_CONSENSUS_RIO_ENTRY_H
#define KAPPA_CONSENSUS_RIO_ENTRY_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/batch.h"
#include "common/buf.h"

/* Checks that e can be stored at base_offset: a command batch must be one
 * whole, non-control batch numbered base_offset with term e->term; a built
 * batch must fit KAPPA_BATCH_BYTES_MAX. Sets *next_offset to the offset
 * after it. Returns 0, KAPPA_EINVAL or KAPPA_ETOOBIG with errmsg filled. */
int rio_entry_check(const struct raft_entry *e, bool is_wrapped,
                    int64_t base_offset, int64_t *next_offset, char *errmsg);

/* Appends the stored form of a checked entry to out (b is scratch).
 * Returns 0 or KAPPA_ENOMEM. */
int rio_entry_encode(struct buf *out, struct batch_builder *b,
                     const struct raft_entry *e, bool is_wrapped,
                     int64_t base_offset);

/* Turns one stored batch p[0..h->batch_bytes) (header and CRC already
 * checked) back into an entry: term and type, and buf pointing into p
 * (batch left NULL). Returns 0 or KAPPA_ECORRUPT (a batch rio could not
 * have written for this kind of group). */
int rio_entry_decode(const uint8_t *p, const struct batch_header *h,
                     bool is_wrapped, struct raft_entry *e);

#endif /* KAPPA_CONSENSUS_RIO_ENTRY_H */
