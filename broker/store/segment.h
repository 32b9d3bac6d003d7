/* One segment of a partition log: an append-only .log file of record
 * batches plus its in-memory sparse index. Private to broker/store: log.c
 * reads the fields, only segment.c changes them. Loop thread only. */
#ifndef KAPPA_BROKER_STORE_SEGMENT_H
#define KAPPA_BROKER_STORE_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/batch.h"
#include "index.h"

/* "%020lld.timeindex" and a NUL fit. */
#define SEGMENT_NAME_SIZE 32

/* Positions in the .log are u32 in the index, so a segment stays below
 * 4 GiB: the log rolls at segment_bytes <= 2 GiB and one append is at most
 * KAPPA_SEGMENT_APPEND_BYTES_MAX. */
#define KAPPA_SEGMENT_BYTES_MAX        (1ull << 31)
#define KAPPA_SEGMENT_APPEND_BYTES_MAX (1ull << 30)

/* Buffer for the recovery and rebuild scans, which read the file
 * sequentially. */
#define SEGMENT_SCAN_BUFFER_BYTES ((size_t)256 * 1024)

/* The directory a log lives in: an fd for the *at() calls and fsync, and
 * the path for messages. Owned by the log. */
struct store_dir {
    int fd;
    const char *path;
};

enum segment_ext {
    SEGMENT_EXT_LOG = 0,
    SEGMENT_EXT_INDEX,
    SEGMENT_EXT_TIMEINDEX,
};

struct segment {
    const struct store_dir *dir;
    int64_t base_offset;
    int64_t next_offset;      /* active: offset the next batch gets */
    uint64_t size_bytes;      /* of the .log, every byte a whole batch */
    int64_t max_timestamp_ms; /* of all batches; INT64_MIN when empty */
    int64_t roll_base_ms;     /* age roll counts from it; INT64_MIN: unset */
    uint32_t index_interval_bytes;
    int fd;             /* -1 while a sealed segment is unloaded */
    bool is_active;     /* the log's last segment, appended to */
    bool is_loaded;     /* fd open and idx holds every entry */
    bool is_failed;     /* a failed append could not be undone */
    uint64_t used_tick; /* for the log's LRU of loaded sealed segments */
    uint64_t last_index_position; /* last entry's position, or 0 */
    /* Where the last read stopped, so a sequential reader skips the
     * index walk: the batch at hint_position has base hint_offset. */
    int64_t hint_offset; /* -1: none */
    uint64_t hint_position;
    struct index idx;
};

/* Writes "%020lld.log" (or .index/.timeindex) into name[SEGMENT_NAME_SIZE]. */
void segment_name(char *name, int64_t base_offset, enum segment_ext ext);

/* Parses a segment file name. Returns 0 with *base_offset and *ext set, or
 * -1 when name is not one. */
int segment_name_parse(const char *name, int64_t *base_offset,
                       enum segment_ext *ext);

/* Creates an empty active segment (the file must not exist). Does not
 * fsync the directory. Returns 0, KAPPA_EIO, KAPPA_ENOSPC or KAPPA_ENOMEM
 * with errmsg filled. */
int segment_create(const struct store_dir *dir, int64_t base_offset,
                   uint32_t index_interval_bytes, struct segment **out,
                   char *errmsg);

/* Opens the last segment of a log and recovers it: every batch is checked
 * (header, CRC, offsets contiguous from base_offset) and the file is cut
 * at the first bad one (ftruncate + fsync, logged with file and byte
 * position). Builds the index in memory; the index files are ignored. The
 * data is fsynced, so everything in it is durable. The age roll counts from
 * the first batch's max timestamp, capped at now_ms. Returns 0, KAPPA_EIO,
 * KAPPA_ENOMEM with errmsg filled. */
int segment_recover(const struct store_dir *dir, int64_t base_offset,
                    uint32_t index_interval_bytes, int64_t now_ms,
                    struct segment **out, char *errmsg);

/* Opens a sealed segment. Its size and max timestamp come from the index
 * file headers; when those are missing, damaged or stale the segment is
 * scanned, the index files rewritten, and the segment left loaded.
 * Corruption found by the scan is logged, not returned. Returns 0,
 * KAPPA_EIO or KAPPA_ENOMEM with errmsg filled. */
int segment_open_sealed(const struct store_dir *dir, int64_t base_offset,
                        uint32_t index_interval_bytes, struct segment **out,
                        char *errmsg);

/* Closes the file and frees, without syncing. segment_free(NULL) is a
 * no-op. */
void segment_free(struct segment *seg);

/* Opens the file and loads the index of a sealed segment, rebuilding the
 * index files if they are damaged. Returns 0, KAPPA_EIO or KAPPA_ENOMEM. */
int segment_load(struct segment *seg, char *errmsg);

/* Closes the file and drops the index of a loaded sealed segment. */
void segment_unload(struct segment *seg);

/* Appends n bytes of n_batches whole, valid batches to the active segment:
 * rewrites their base offsets from next_offset and their term in place,
 * then writes them with one pwrite. On error nothing is appended (a partial
 * write is cut off; if that fails too, is_failed is set). Returns 0,
 * KAPPA_EIO, KAPPA_ENOSPC or KAPPA_ENOMEM with errmsg filled. */
int segment_append(struct segment *seg, uint8_t *p, size_t n,
                   uint32_t n_batches, uint64_t term, char *errmsg);

/* Seals the active segment: fdatasync, then the index files (a failure to
 * write those is only logged: they get rebuilt). It stays loaded. Returns
 * 0 or the fdatasync error (KAPPA_EIO, KAPPA_ENOSPC). */
int segment_seal(struct segment *seg, char *errmsg);

/* Makes a sealed segment active again (after a failed roll). */
void segment_unseal(struct segment *seg);

/* Writes both index files for the segment as it is now. */
int segment_write_index(struct segment *seg, char *errmsg);

/* Finds the batch that contains offset in a loaded segment, starting from
 * the read hint or the index and walking batch headers. offset must be
 * below the segment's end. Returns 0 with *position and *h set,
 * KAPPA_ECORRUPT (logged with file and position) or KAPPA_EIO. */
int segment_find(struct segment *seg, int64_t offset, uint64_t *position,
                 struct batch_header *h);

/* Reads whole batches from the one containing offset into dst (see
 * log_read), stopping at the end of the segment. Every batch returned has
 * its header and CRC checked; a bad first batch is KAPPA_ECORRUPT, a bad
 * later one ends the read before it. Returns 0, KAPPA_ETOOBIG (first batch
 * larger than dst_cap), KAPPA_ECORRUPT or KAPPA_EIO. */
int segment_read(struct segment *seg, int64_t offset, int64_t max_offset,
                 size_t max_bytes, uint8_t *dst, size_t dst_cap,
                 size_t *n_read);

/* Base offset of the first batch whose max timestamp is >= timestamp_ms.
 * Returns 0 with *offset set, 1 when there is none in this segment,
 * KAPPA_ECORRUPT or KAPPA_EIO. */
int segment_offset_for_timestamp(struct segment *seg, int64_t timestamp_ms,
                                 int64_t *offset);

/* Checks that offset is the base offset of a batch of the loaded segment
 * (or the segment's base) and returns its position. Returns 0, KAPPA_EINVAL,
 * KAPPA_ECORRUPT or KAPPA_EIO. */
int segment_boundary(struct segment *seg, int64_t offset, uint64_t *position);

/* Cuts a loaded segment before the batch with base offset offset (see
 * segment_boundary), fsyncs it, removes its index files and makes it the
 * active segment. Returns 0, KAPPA_EINVAL, KAPPA_ECORRUPT or KAPPA_EIO with
 * errmsg filled. */
int segment_truncate(struct segment *seg, int64_t offset, char *errmsg);

/* Unlinks the segment's files (the .log first) and frees it. On failure
 * to unlink the .log the segment is kept and KAPPA_EIO returned. */
int segment_remove(struct segment *seg, char *errmsg);

#endif /* KAPPA_BROKER_STORE_SEGMENT_H */
