/* The sparse offset index and time index of one segment: one array in
 * memory, two files on disk (.index and .timeindex). Private to
 * broker/store. */
#ifndef KAPPA_BROKER_STORE_INDEX_H
#define KAPPA_BROKER_STORE_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define INDEX_HEADER_BYTES       64
#define INDEX_OFFSET_ENTRY_BYTES 8
#define INDEX_TIME_ENTRY_BYTES   12

/* One sparse entry: the batch starting at position in the .log file has
 * base offset segment_base + rel_offset, and every batch before it has a
 * max timestamp <= timestamp_ms (the running maximum; INT64_MIN when there
 * is no batch before it). Entries are strictly increasing in rel_offset and
 * position and non-decreasing in timestamp_ms. */
struct index_entry {
    int64_t timestamp_ms;
    uint32_t rel_offset;
    uint32_t position;
};

struct index {
    struct index_entry *entries;
    uint32_t n_entries;
    uint32_t cap_entries;
};

/* What both file headers say besides the entries. */
struct index_meta {
    int64_t base_offset;
    uint64_t segment_bytes;   /* length of the .log the files describe */
    int64_t max_timestamp_ms; /* of the whole segment; INT64_MIN if empty */
    uint32_t n_entries;
};

void index_init(struct index *idx);

/* Frees the entries and leaves idx empty (index_init state). */
void index_free(struct index *idx);

/* Makes room for extra more entries. Returns 0 or KAPPA_ENOMEM. */
int index_reserve(struct index *idx, uint32_t extra);

/* Adds an entry; room must have been reserved and the entry must come after
 * the last one (programmer errors, asserted). */
void index_add(struct index *idx, uint32_t rel_offset, uint32_t position,
               int64_t timestamp_ms);

/* Drops every entry at or past position. */
void index_truncate(struct index *idx, uint32_t position);

/* The last entry with rel_offset <= rel_offset, or NULL when there is none
 * (the scan then starts at position 0). Returned memory is owned by idx and
 * valid until it changes. */
const struct index_entry *index_lookup_offset(const struct index *idx,
                                              uint32_t rel_offset);

/* The last entry whose timestamp_ms is < timestamp_ms, or NULL when there is
 * none. Every batch before it has a max timestamp below timestamp_ms. */
const struct index_entry *index_lookup_time(const struct index *idx,
                                            int64_t timestamp_ms);

/* The entry after e, or NULL. */
const struct index_entry *index_next(const struct index *idx,
                                     const struct index_entry *e);

/* Writes both files (names relative to dir_fd), replacing any old ones. They
 * are not fsynced: a torn file fails its CRC and is rebuilt. On error the
 * files are removed. Returns 0 or KAPPA_EIO/KAPPA_ENOSPC with errmsg. */
int index_write(const struct index *idx, const struct index_meta *meta,
                int dir_fd, const char *offset_name, const char *time_name,
                char *errmsg);

/* Reads and checks both headers against the segment (base offset, current
 * .log length). Returns 0, KAPPA_ENOENT (a file is missing), KAPPA_ECORRUPT
 * (damaged or stale: rebuild) or KAPPA_EIO, with errmsg filled. */
int index_read_meta(int dir_fd, const char *offset_name, const char *time_name,
                    int64_t base_offset, uint64_t segment_bytes,
                    struct index_meta *meta, char *errmsg);

/* Reads both files into idx (which must be empty), checking headers, entry
 * CRCs and entry order. On error idx stays empty. Returns 0, KAPPA_ENOENT,
 * KAPPA_ECORRUPT, KAPPA_ENOMEM or KAPPA_EIO, with errmsg filled. */
int index_load(struct index *idx, int dir_fd, const char *offset_name,
               const char *time_name, int64_t base_offset,
               uint64_t segment_bytes, struct index_meta *meta, char *errmsg);

#endif /* KAPPA_BROKER_STORE_INDEX_H */
