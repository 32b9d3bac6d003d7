/* A partition's log: a directory of append-only segment files named by base
 * offset, each with a sparse offset index and a time index. Loop thread
 * only, except log_sync_execute. Nothing here fsyncs unless it says so; the
 * fsync points are listed at the top of log.c and in docs/storage.md. */
#ifndef KAPPA_BROKER_STORE_LOG_H
#define KAPPA_BROKER_STORE_LOG_H

#include <stddef.h>
#include <stdint.h>

struct log_config {
    uint64_t segment_bytes;        /* roll before an append would pass it;
                                      1 .. 2 GiB */
    int64_t segment_ms;            /* roll when the active segment is older
                                      (counted from its first append) */
    int64_t retention_bytes;       /* -1: no size limit; else delete old
                                      segments while the rest is >= it */
    int64_t retention_ms;          /* -1: no age limit; else delete old
                                      segments whose max timestamp is older */
    uint32_t index_interval_bytes; /* bytes between sparse index entries */
};

/* Defaults: 1 GiB segments, 7 days, no size retention, 7 days retention,
 * 4 KiB index interval. */
void log_config_default(struct log_config *cfg);

struct log;

/* Opens (creating if needed) the log in dir and recovers it: the last
 * segment is scanned and a torn or corrupt tail is truncated and logged
 * with file and offset; missing or damaged indexes are rebuilt. Corruption
 * in a sealed segment is logged, not fatal. The recovered tail is fsynced,
 * so flushed == end afterwards. dir's parent must exist. Returns 0,
 * KAPPA_EINVAL (bad cfg), KAPPA_EIO, KAPPA_ENOMEM or KAPPA_ECORRUPT (with
 * errmsg filled). */
int log_open(const char *dir, const struct log_config *cfg, int64_t now_ms,
             struct log **out, char *errmsg);

/* Fsyncs, writes indexes and frees. No sync may be pending (asserted).
 * log_close(NULL) is a no-op. */
void log_close(struct log *l);

/* Removes every file of the log and the directory itself, then frees
 * (even on error). Returns 0 or KAPPA_EIO (e.g. foreign files in dir). */
int log_destroy(struct log *l);

/* Offsets: [start, end). flushed <= end: every offset below flushed is
 * durable (fdatasync'd). */
int64_t log_start_offset(const struct log *l);
int64_t log_end_offset(const struct log *l);
int64_t log_flushed_offset(const struct log *l);
uint64_t log_size_bytes(const struct log *l);
uint32_t log_segment_count(const struct log *l);

/* Appends n bytes of concatenated, already validated batches. Assigns
 * offsets from log_end_offset by rewriting each batch's base offset and term
 * in place (p is modified), then write()s them to the active segment, rolling
 * first if the segment is full or too old. Does not fsync the data (see
 * log_sync_*); a roll fdatasyncs the sealed segment and the directory.
 * *base_offset receives the first assigned offset. Returns 0, KAPPA_EIO,
 * KAPPA_ENOSPC, KAPPA_ENOMEM, KAPPA_EINVAL (n == 0 or bytes that are not
 * whole batches) or KAPPA_ETOOBIG (n > 1 GiB); on error nothing is
 * appended. After a failed fdatasync (roll or group commit) the log is
 * failed and every append returns KAPPA_EIO until it is reopened. */
int log_append(struct log *l, uint8_t *p, size_t n, uint64_t term,
               int64_t now_ms, int64_t *base_offset, char *errmsg);

/* Appends n bytes of concatenated batches that already carry their final
 * base offset and term (replicated Raft entries, consensus/rio): every
 * batch's header and CRC are checked, the first base offset must equal
 * log_end_offset and each later one must follow its predecessor. Nothing
 * is renumbered. Rolls first as log_append does, then writes with one
 * write() per run of consecutive batches of the same term (one for a
 * leader's appends). Does not fsync the data. p is written to, but only
 * with the values it already holds. Returns 0, KAPPA_EINVAL (not whole
 * valid batches, or offsets that do not continue the log; nothing
 * appended, errmsg says which), KAPPA_ETOOBIG, KAPPA_EIO, KAPPA_ENOSPC or
 * KAPPA_ENOMEM. When a later write fails after an earlier one (only with
 * several terms) the earlier batches stay and the log is failed. */
int log_append_exact(struct log *l, uint8_t *p, size_t n, int64_t now_ms,
                     char *errmsg);

/* Deletes every segment (newest first) and starts the log again, empty,
 * at start_offset: start == end == flushed == start_offset and the next
 * append must be numbered from there (Raft InstallSnapshot). The directory
 * is fsynced. A group-commit sync may be in flight: its completion then
 * leaves the flushed offset alone. A crash midway leaves a prefix of the
 * old log or an empty log at 0. Returns 0, KAPPA_EINVAL (start_offset < 0;
 * nothing changed), KAPPA_EIO, KAPPA_ENOSPC or KAPPA_ENOMEM (the log is
 * then failed until reopened). */
int log_reset(struct log *l, int64_t start_offset, char *errmsg);

/* Group commit, in three steps so the fdatasync can run off the loop:
 * prepare (loop) captures a dup'd fd of the active segment and the end
 * offset it covers; execute (any thread) runs fdatasync; complete (loop)
 * closes the fd and, on success, advances the flushed offset (unless a
 * log_truncate ran in between). At most one sync per log is in flight.
 * prepare returns KAPPA_EBUSY if one is, 1 (nothing to do) if flushed ==
 * end, KAPPA_EIO if the log failed. A failed execute (s->rv != 0) fails
 * the log: Linux may have dropped the dirty pages, so retrying would lie. */
struct log_sync {
    int fd;
    int64_t end_offset;
    int rv;
};
int log_sync_prepare(struct log *l, struct log_sync *s);
void log_sync_execute(struct log_sync *s);
void log_sync_complete(struct log *l, struct log_sync *s);

/* Convenience for tests and shutdown: prepare + execute + complete. */
int log_sync_now(struct log *l);

/* Reads whole batches starting with the batch that contains offset, stopping
 * before any batch at or past max_offset (the high watermark) and before
 * max_bytes, except that the first batch is always returned whole if it fits
 * in dst_cap. Bytes are pread straight into dst (one copy, no re-encoding).
 * A read never crosses a segment end (read again from the next offset).
 * Every batch returned has had its header and CRC checked; a bad batch after
 * the first ends the read before it. *n_read is 0 when offset >=
 * min(end, max_offset). Returns 0, KAPPA_EOFFSET_RANGE (offset below start
 * or above end), KAPPA_ETOOBIG (the first batch is larger than dst_cap: see
 * log_batch_bytes_at), KAPPA_ECORRUPT (logged with file and position) or
 * KAPPA_EIO. */
int log_read(struct log *l, int64_t offset, int64_t max_offset,
             size_t max_bytes, uint8_t *dst, size_t dst_cap, size_t *n_read);

/* Size of the batch containing offset (to size a buffer for log_read when
 * one batch is larger than max_bytes). offset must be below end. Returns 0
 * or an error as log_read. */
int log_batch_bytes_at(struct log *l, int64_t offset, uint32_t *batch_bytes);

/* Base offset of the earliest batch whose max timestamp is >=
 * timestamp_ms; the end offset when there is none. Returns 0,
 * KAPPA_ECORRUPT or KAPPA_EIO. */
int log_offset_for_timestamp(struct log *l, int64_t timestamp_ms,
                             int64_t *offset);

/* Removes every record at or after from_offset (Raft drops an uncommitted
 * tail with it). Whole segments past it are deleted; the segment holding it
 * is cut at the batch boundary and fsynced, as is the directory; flushed
 * becomes from_offset. from_offset must be a batch base offset in
 * [start, end]. Returns 0, KAPPA_EINVAL (nothing changed), KAPPA_ECORRUPT
 * or KAPPA_EIO (the log is then failed until reopened). */
int log_truncate(struct log *l, int64_t from_offset, char *errmsg);

/* Rolls the active segment if it is older than segment_ms, then deletes
 * whole old segments past retention_bytes or retention_ms. The active
 * segment is never deleted; deletion stops at the first segment that is
 * kept, so the log stays contiguous. *n_deleted receives the number of
 * segments deleted. Returns 0 or KAPPA_EIO (logged). */
int log_housekeep(struct log *l, int64_t now_ms, uint32_t *n_deleted);

#endif /* KAPPA_BROKER_STORE_LOG_H */
