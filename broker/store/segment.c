/*
 * Segment files. A segment NNNNNNNNNNNNNNNNNNNN.log (NNN... = the base
 * offset, the offset of its first record, in 20 decimal digits) is a plain
 * concatenation of record batches exactly as common/batch.c lays them out,
 * with base_offset and term rewritten by the broker. There is no file
 * header and no padding: byte 0 is the first batch's header, and the file
 * length is the sum of the batch lengths.
 *
 *   position 0          batch, base offset = segment base offset
 *   position b0         batch, base offset = previous base + record_count
 *   ...
 *   position size       end of file
 *
 * A segment is valid when, walking from position 0, every batch header
 * decodes (batch_header_decode), fits in the file, has the expected base
 * offset (offsets are contiguous), and its CRC-32C over [24, batch_bytes)
 * matches. The index files are described in index.c.
 *
 * Happy path: segment_create or segment_recover gives the active segment;
 * segment_append pwrites whole appends; segment_seal fdatasyncs and writes
 * the index files; sealed segments are opened from their index headers
 * alone and loaded (fd + index entries) lazily on the first read.
 *
 * Failure modes:
 * - Torn or corrupt tail of the last segment (crash in the middle of a
 *   write, or bytes that never reached the disk): segment_recover cuts the
 *   file at the last valid batch and fsyncs it.
 * - Damaged, stale or missing index files: rebuilt by scanning the .log.
 * - Corruption inside a sealed segment: the rebuild scan stops indexing at
 *   it and logs it; reads that reach it return KAPPA_ECORRUPT and log the
 *   file and position. Nothing on disk is ever asserted on.
 * - A failed pwrite is cut off with ftruncate, so nothing of a failed append
 *   stays; if that ftruncate fails, is_failed is set and the log refuses
 *   further appends.
 */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/crc32c.h"
#include "common/err.h"
#include "common/log.h"
#include "io.h"

/* Header walks read the file through a window of this size. */
#define WALK_WINDOW_BYTES 4096
#define SEGMENT_DIGITS    20

static const char *const ext_names[] = {".log", ".index", ".timeindex"};

void segment_name(char *name, int64_t base_offset, enum segment_ext ext)
{
    (void)snprintf(name, SEGMENT_NAME_SIZE, "%020" PRId64 "%s", base_offset,
                   ext_names[ext]);
}

int segment_name_parse(const char *name, int64_t *base_offset,
                       enum segment_ext *ext)
{
    int64_t v = 0;
    size_t i;

    for (i = 0; i < SEGMENT_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return -1;
        }
        if (v > (INT64_MAX - (name[i] - '0')) / 10) {
            return -1;
        }
        v = v * 10 + (name[i] - '0');
    }
    for (int e = SEGMENT_EXT_LOG; e <= SEGMENT_EXT_TIMEINDEX; e++) {
        if (strcmp(name + i, ext_names[e]) == 0) {
            *base_offset = v;
            *ext = (enum segment_ext)e;
            return 0;
        }
    }
    return -1;
}

static struct segment *segment_alloc(const struct store_dir *dir,
                                     int64_t base_offset,
                                     uint32_t index_interval_bytes)
{
    struct segment *seg = kappa_calloc(1, sizeof *seg);

    if (seg == NULL) {
        return NULL;
    }
    seg->dir = dir;
    seg->base_offset = base_offset;
    seg->next_offset = base_offset;
    seg->max_timestamp_ms = INT64_MIN;
    seg->roll_base_ms = INT64_MIN;
    seg->index_interval_bytes = index_interval_bytes;
    seg->fd = -1;
    seg->hint_offset = -1;
    index_init(&seg->idx);
    return seg;
}

void segment_free(struct segment *seg)
{
    if (seg == NULL) {
        return;
    }
    if (seg->fd >= 0) {
        close(seg->fd);
    }
    index_free(&seg->idx);
    kappa_free(seg);
}

static int open_log_file(struct segment *seg, int flags, char *errmsg)
{
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, seg->base_offset, SEGMENT_EXT_LOG);
    seg->fd = openat(seg->dir->fd, name, O_RDWR | O_CLOEXEC | flags, 0644);
    if (seg->fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s/%s: %s", seg->dir->path, name,
                            strerror(errno));
        return errno == ENOSPC ? KAPPA_ENOSPC : KAPPA_EIO;
    }
    return 0;
}

int segment_create(const struct store_dir *dir, int64_t base_offset,
                   uint32_t index_interval_bytes, struct segment **out,
                   char *errmsg)
{
    struct segment *seg = segment_alloc(dir, base_offset, index_interval_bytes);
    int rv;

    if (seg == NULL) {
        kappa_errmsg_printf(errmsg, "create segment: out of memory");
        return KAPPA_ENOMEM;
    }
    rv = open_log_file(seg, O_CREAT | O_EXCL, errmsg);
    if (rv != 0) {
        segment_free(seg);
        return rv;
    }
    seg->is_active = true;
    seg->is_loaded = true;
    *out = seg;
    return 0;
}

/* Adds an index entry for the batch at position if it starts
 * index_interval_bytes or more past the previous entry, then folds its max
 * timestamp in. Room for the entry must be reserved. */
static void track_batch(struct segment *seg, uint64_t position,
                        const struct batch_header *h)
{
    if (position >= seg->last_index_position + seg->index_interval_bytes &&
        (seg->idx.n_entries == 0 || position > seg->last_index_position)) {
        index_add(&seg->idx, (uint32_t)(h->base_offset - seg->base_offset),
                  (uint32_t)position, seg->max_timestamp_ms);
        seg->last_index_position = position;
    }
    if (h->max_timestamp_ms > seg->max_timestamp_ms) {
        seg->max_timestamp_ms = h->max_timestamp_ms;
    }
}

/* A sequential reader over the file for the recovery and rebuild scans. */
struct scan {
    struct segment *seg;
    uint64_t file_bytes;
    uint8_t *buf;
    uint64_t win_pos;
    size_t win_len;
    int64_t first_max_timestamp_ms;
    const char *stop_reason; /* NULL: the whole file is valid */
};

/* Points *p at bytes [pos, pos + len) of the file, reading a new window
 * when they are not in the current one. len <= the buffer size. */
static int scan_bytes(struct scan *s, uint64_t pos, size_t len,
                      const uint8_t **p)
{
    size_t want = SEGMENT_SCAN_BUFFER_BYTES;
    int rv;

    if (pos < s->win_pos || pos + len > s->win_pos + s->win_len) {
        if (s->file_bytes - pos < want) {
            want = (size_t)(s->file_bytes - pos);
        }
        rv = io_pread(s->seg->fd, s->buf, want, pos, &s->win_len);
        s->win_pos = pos;
        if (rv != 0) {
            return KAPPA_EIO;
        }
        if (s->win_len < len) {
            errno = EIO; /* the file shrank under us */
            return KAPPA_EIO;
        }
    }
    *p = s->buf + (pos - s->win_pos);
    return 0;
}

/* CRC-32C of file bytes [from, to), streamed through the window. */
static int scan_crc(struct scan *s, uint64_t from, uint64_t to, uint32_t *crc)
{
    uint32_t c = 0;

    while (from < to) {
        uint64_t len = to - from;
        const uint8_t *p;
        int rv;
        if (from >= s->win_pos && from < s->win_pos + s->win_len) {
            uint64_t in_window = s->win_pos + s->win_len - from;
            len = len < in_window ? len : in_window;
        } else if (len > SEGMENT_SCAN_BUFFER_BYTES) {
            len = SEGMENT_SCAN_BUFFER_BYTES;
        }
        rv = scan_bytes(s, from, (size_t)len, &p);
        if (rv != 0) {
            return rv;
        }
        c = crc32c_extend(c, p, (size_t)len);
        from += len;
    }
    *crc = c;
    return 0;
}

/* Checks the batch at pos. Returns 0, 1 (invalid: stop_reason set) or an
 * I/O error. */
static int scan_batch(struct scan *s, uint64_t pos, struct batch_header *h)
{
    const uint8_t *p;
    uint32_t crc;
    int rv;

    if (s->file_bytes - pos < KAPPA_BATCH_HEADER_BYTES) {
        s->stop_reason = "torn batch header";
        return 1;
    }
    rv = scan_bytes(s, pos, KAPPA_BATCH_HEADER_BYTES, &p);
    if (rv != 0) {
        return rv;
    }
    if (batch_header_decode(p, KAPPA_BATCH_HEADER_BYTES, h) != 0) {
        s->stop_reason = "bad batch header";
        return 1;
    }
    if (h->batch_bytes > s->file_bytes - pos) {
        s->stop_reason = "batch runs past the end of the file";
        return 1;
    }
    if (h->base_offset != s->seg->next_offset) {
        s->stop_reason = "base offset not contiguous";
        return 1;
    }
    if (pos + h->batch_bytes > UINT32_MAX ||
        h->base_offset + h->record_count - s->seg->base_offset > UINT32_MAX) {
        s->stop_reason = "segment larger than the index can address";
        return 1;
    }
    rv = scan_crc(s, pos + KAPPA_BATCH_CRC_START, pos + h->batch_bytes, &crc);
    if (rv != 0) {
        return rv;
    }
    if (crc != h->crc) {
        s->stop_reason = "checksum mismatch";
        return 1;
    }
    return 0;
}

/* Walks the file from position 0, building the index, max timestamp,
 * next_offset and size_bytes of the valid prefix. The file is not changed.
 * Returns 0 (s->stop_reason tells whether all of it is valid), KAPPA_EIO or
 * KAPPA_ENOMEM. */
static int scan_file(struct scan *s, char *errmsg)
{
    struct segment *seg = s->seg;
    struct batch_header h;
    uint64_t pos = 0;
    int rv;

    seg->next_offset = seg->base_offset;
    seg->max_timestamp_ms = INT64_MIN;
    seg->last_index_position = 0;
    s->first_max_timestamp_ms = INT64_MIN;
    while (pos < s->file_bytes) {
        rv = scan_batch(s, pos, &h);
        if (rv == 1) {
            break;
        }
        if (rv == 0) {
            rv = index_reserve(&seg->idx, 1);
        }
        if (rv != 0) {
            kappa_errmsg_printf(errmsg, "scan %s at byte %" PRIu64 ": %s",
                                seg->dir->path, pos, kappa_err_str(rv));
            return rv;
        }
        if (pos == 0) {
            s->first_max_timestamp_ms = h.max_timestamp_ms;
        }
        track_batch(seg, pos, &h);
        seg->next_offset = h.base_offset + h.record_count;
        pos += h.batch_bytes;
    }
    seg->size_bytes = pos;
    return 0;
}

/* Runs scan_file with a fresh index and its own buffer. */
static int scan_run(struct segment *seg, uint64_t file_bytes, struct scan *s,
                    char *errmsg)
{
    int rv;

    memset(s, 0, sizeof *s);
    s->seg = seg;
    s->file_bytes = file_bytes;
    s->buf = kappa_malloc(SEGMENT_SCAN_BUFFER_BYTES);
    if (s->buf == NULL) {
        kappa_errmsg_printf(errmsg, "scan: out of memory");
        return KAPPA_ENOMEM;
    }
    index_free(&seg->idx);
    rv = scan_file(s, errmsg);
    kappa_free(s->buf);
    s->buf = NULL;
    if (rv != 0) {
        index_free(&seg->idx);
    }
    return rv;
}

static int file_bytes_get(struct segment *seg, uint64_t *bytes, char *errmsg)
{
    struct stat st;

    if (fstat(seg->fd, &st) != 0) {
        kappa_errmsg_printf(errmsg, "stat %s: %s", seg->dir->path,
                            strerror(errno));
        return KAPPA_EIO;
    }
    *bytes = (uint64_t)st.st_size;
    return 0;
}

/* Cuts the file at the end of its valid prefix and makes that durable. */
static int cut_tail(struct segment *seg, uint64_t file_bytes,
                    const char *reason, char *errmsg)
{
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, seg->base_offset, SEGMENT_EXT_LOG);
    kappa_log(KAPPA_LOG_WARN, "store",
              "truncating %s/%s at byte %" PRIu64 " of %" PRIu64
              ": %s; offsets from %" PRId64 " dropped",
              seg->dir->path, name, seg->size_bytes, file_bytes, reason,
              seg->next_offset);
    if (ftruncate(seg->fd, (off_t)seg->size_bytes) != 0) {
        kappa_errmsg_printf(errmsg, "truncate %s/%s: %s", seg->dir->path, name,
                            strerror(errno));
        return KAPPA_EIO;
    }
    return 0;
}

int segment_recover(const struct store_dir *dir, int64_t base_offset,
                    uint32_t index_interval_bytes, int64_t now_ms,
                    struct segment **out, char *errmsg)
{
    struct segment *seg = segment_alloc(dir, base_offset, index_interval_bytes);
    struct scan s;
    uint64_t file_bytes;
    int rv;

    if (seg == NULL) {
        kappa_errmsg_printf(errmsg, "recover segment: out of memory");
        return KAPPA_ENOMEM;
    }
    rv = open_log_file(seg, 0, errmsg);
    if (rv == 0) {
        rv = file_bytes_get(seg, &file_bytes, errmsg);
    }
    if (rv == 0) {
        rv = scan_run(seg, file_bytes, &s, errmsg);
    }
    if (rv == 0 && s.stop_reason != NULL) {
        rv = cut_tail(seg, file_bytes, s.stop_reason, errmsg);
    }
    /* Whatever survived a crash of this process may still be only in the
     * page cache: make it durable, so the flushed offset starts at the
     * end. */
    if (rv == 0 && io_fsync(seg->fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", dir->path, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (rv != 0) {
        segment_free(seg);
        return rv;
    }
    if (seg->size_bytes > 0) {
        seg->roll_base_ms = s.first_max_timestamp_ms < now_ms
                                ? s.first_max_timestamp_ms
                                : now_ms;
    }
    seg->is_active = true;
    seg->is_loaded = true;
    *out = seg;
    return 0;
}

/* Scans a sealed segment to rebuild its index and rewrites the files. The
 * fd must be open. Corruption is logged; the index then covers the valid
 * prefix and reads past it find the damage themselves. */
static int rebuild(struct segment *seg, const char *why, char *errmsg)
{
    char name[SEGMENT_NAME_SIZE];
    uint64_t file_bytes;
    struct scan s;
    int rv;

    segment_name(name, seg->base_offset, SEGMENT_EXT_LOG);
    kappa_log(KAPPA_LOG_WARN, "store", "rebuilding index of %s/%s: %s",
              seg->dir->path, name, why);
    rv = file_bytes_get(seg, &file_bytes, errmsg);
    if (rv == 0) {
        rv = scan_run(seg, file_bytes, &s, errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    if (s.stop_reason != NULL) {
        kappa_log(KAPPA_LOG_ERROR, "store",
                  "corruption in sealed segment %s/%s at byte %" PRIu64
                  " of %" PRIu64 ": %s",
                  seg->dir->path, name, seg->size_bytes, file_bytes,
                  s.stop_reason);
    }
    /* The segment keeps its whole length: data past a damaged batch may
     * still be readable, and the next segment's base fixes the offsets. */
    seg->size_bytes = file_bytes;
    rv = segment_write_index(seg, errmsg);
    if (rv != 0) {
        kappa_log(KAPPA_LOG_WARN, "store", "%s", errmsg);
    }
    return 0;
}

int segment_open_sealed(const struct store_dir *dir, int64_t base_offset,
                        uint32_t index_interval_bytes, struct segment **out,
                        char *errmsg)
{
    struct segment *seg = segment_alloc(dir, base_offset, index_interval_bytes);
    char names[3][SEGMENT_NAME_SIZE];
    struct index_meta meta;
    struct stat st;
    int rv;

    if (seg == NULL) {
        kappa_errmsg_printf(errmsg, "open segment: out of memory");
        return KAPPA_ENOMEM;
    }
    for (int e = SEGMENT_EXT_LOG; e <= SEGMENT_EXT_TIMEINDEX; e++) {
        segment_name(names[e], base_offset, (enum segment_ext)e);
    }
    if (fstatat(dir->fd, names[SEGMENT_EXT_LOG], &st, 0) != 0) {
        kappa_errmsg_printf(errmsg, "stat %s/%s: %s", dir->path,
                            names[SEGMENT_EXT_LOG], strerror(errno));
        segment_free(seg);
        return KAPPA_EIO;
    }
    seg->size_bytes = (uint64_t)st.st_size;
    rv = index_read_meta(dir->fd, names[SEGMENT_EXT_INDEX],
                         names[SEGMENT_EXT_TIMEINDEX], base_offset,
                         seg->size_bytes, &meta, errmsg);
    if (rv == 0) {
        seg->max_timestamp_ms = meta.max_timestamp_ms;
        *out = seg;
        return 0;
    }
    if (rv == KAPPA_ENOENT || rv == KAPPA_ECORRUPT) {
        rv = open_log_file(seg, 0, errmsg);
        if (rv == 0) {
            char why[KAPPA_ERRMSG_SIZE];
            memcpy(why, errmsg, sizeof why);
            rv = rebuild(seg, why, errmsg);
        }
    }
    if (rv != 0) {
        segment_free(seg);
        return rv;
    }
    seg->is_loaded = true;
    *out = seg;
    return 0;
}

int segment_load(struct segment *seg, char *errmsg)
{
    char oname[SEGMENT_NAME_SIZE];
    char tname[SEGMENT_NAME_SIZE];
    struct index_meta meta;
    int rv;

    if (seg->is_loaded) {
        return 0;
    }
    segment_name(oname, seg->base_offset, SEGMENT_EXT_INDEX);
    segment_name(tname, seg->base_offset, SEGMENT_EXT_TIMEINDEX);
    rv = open_log_file(seg, 0, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = index_load(&seg->idx, seg->dir->fd, oname, tname, seg->base_offset,
                    seg->size_bytes, &meta, errmsg);
    if (rv == 0) {
        seg->max_timestamp_ms = meta.max_timestamp_ms;
    } else if (rv == KAPPA_ENOENT || rv == KAPPA_ECORRUPT) {
        char why[KAPPA_ERRMSG_SIZE];
        memcpy(why, errmsg, sizeof why);
        rv = rebuild(seg, why, errmsg);
    }
    if (rv != 0) {
        close(seg->fd);
        seg->fd = -1;
        return rv;
    }
    seg->is_loaded = true;
    return 0;
}

void segment_unload(struct segment *seg)
{
    KAPPA_ASSERT(!seg->is_active);
    if (seg->fd >= 0) {
        close(seg->fd);
        seg->fd = -1;
    }
    index_free(&seg->idx);
    seg->hint_offset = -1;
    seg->is_loaded = false;
}

/* Assigns offsets and the term in place; returns the offset after them. The
 * caller checked every header, so a bad one is a programmer error. */
static int64_t assign_offsets(uint8_t *p, size_t n, int64_t next_offset,
                              uint64_t term)
{
    struct batch_header h;
    size_t pos = 0;

    while (pos < n) {
        KAPPA_ASSERT(batch_header_decode(p + pos, n - pos, &h) == 0);
        batch_set_base_offset(p + pos, next_offset);
        batch_set_term(p + pos, term);
        next_offset += h.record_count;
        pos += h.batch_bytes;
    }
    return next_offset;
}

static void index_appended(struct segment *seg, const uint8_t *p, size_t n)
{
    struct batch_header h;
    size_t pos = 0;

    while (pos < n) {
        KAPPA_ASSERT(batch_header_decode(p + pos, n - pos, &h) == 0);
        track_batch(seg, seg->size_bytes + pos, &h);
        pos += h.batch_bytes;
    }
}

int segment_append(struct segment *seg, uint8_t *p, size_t n,
                   uint32_t n_batches, uint64_t term, char *errmsg)
{
    int64_t next_offset;
    int rv;

    KAPPA_ASSERT(seg->is_active);
    KAPPA_ASSERT(!seg->is_failed);
    KAPPA_ASSERT(seg->size_bytes + n <= UINT32_MAX);
    rv = index_reserve(&seg->idx, n_batches);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "index: out of memory");
        return rv;
    }
    next_offset = assign_offsets(p, n, seg->next_offset, term);
    rv = io_pwrite(seg->fd, p, n, seg->size_bytes);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", seg->dir->path,
                            strerror(errno));
        /* Part of the buffer may have landed: cut it off, so that the
         * file again ends with a whole batch. */
        if (ftruncate(seg->fd, (off_t)seg->size_bytes) != 0) {
            seg->is_failed = true;
        }
        return rv;
    }
    index_appended(seg, p, n);
    seg->size_bytes += n;
    seg->next_offset = next_offset;
    return 0;
}

int segment_write_index(struct segment *seg, char *errmsg)
{
    char oname[SEGMENT_NAME_SIZE];
    char tname[SEGMENT_NAME_SIZE];
    struct index_meta meta;
    int rv;

    segment_name(oname, seg->base_offset, SEGMENT_EXT_INDEX);
    segment_name(tname, seg->base_offset, SEGMENT_EXT_TIMEINDEX);
    meta.base_offset = seg->base_offset;
    meta.segment_bytes = seg->size_bytes;
    meta.max_timestamp_ms = seg->max_timestamp_ms;
    meta.n_entries = seg->idx.n_entries;
    rv = index_write(&seg->idx, &meta, seg->dir->fd, oname, tname, errmsg);
    if (rv != 0) {
        kappa_errmsg_wrap(errmsg, "index of %s", seg->dir->path);
    }
    return rv;
}

int segment_seal(struct segment *seg, char *errmsg)
{
    int rv;

    KAPPA_ASSERT(seg->is_active);
    rv = io_fdatasync(seg->fd);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "fdatasync %s: %s", seg->dir->path,
                            strerror(errno));
        return rv;
    }
    if (segment_write_index(seg, errmsg) != 0) {
        kappa_log(KAPPA_LOG_WARN, "store", "%s", errmsg);
    }
    seg->is_active = false;
    return 0;
}

void segment_unseal(struct segment *seg)
{
    KAPPA_ASSERT(seg->is_loaded);
    seg->is_active = true;
}

/* Reads batch headers through a small window. */
struct walk {
    struct segment *seg;
    uint64_t win_pos;
    size_t win_len;
    uint8_t buf[WALK_WINDOW_BYTES];
};

/* Logs corruption at a position of the segment and returns
 * KAPPA_ECORRUPT. */
static int corrupt_at(const struct segment *seg, uint64_t position,
                      const char *why)
{
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, seg->base_offset, SEGMENT_EXT_LOG);
    kappa_log(KAPPA_LOG_ERROR, "store", "corrupt %s/%s at byte %" PRIu64 ": %s",
              seg->dir->path, name, position, why);
    return KAPPA_CORRUPT();
}

/* Decodes the header at pos and checks it against the expected base offset
 * and the segment length. */
static int walk_header(struct walk *w, uint64_t pos, int64_t expect,
                       struct batch_header *h)
{
    struct segment *seg = w->seg;
    int rv;

    if (seg->size_bytes - pos < KAPPA_BATCH_HEADER_BYTES) {
        return corrupt_at(seg, pos, "torn batch header");
    }
    if (pos < w->win_pos ||
        pos + KAPPA_BATCH_HEADER_BYTES > w->win_pos + w->win_len) {
        size_t want = sizeof w->buf;
        if (seg->size_bytes - pos < want) {
            want = (size_t)(seg->size_bytes - pos);
        }
        w->win_pos = pos;
        rv = io_pread(seg->fd, w->buf, want, pos, &w->win_len);
        if (rv != 0 || w->win_len < KAPPA_BATCH_HEADER_BYTES) {
            w->win_len = 0;
            return KAPPA_EIO;
        }
    }
    if (batch_header_decode(w->buf + (pos - w->win_pos),
                            KAPPA_BATCH_HEADER_BYTES, h) != 0) {
        return corrupt_at(seg, pos, "bad batch header");
    }
    if (h->base_offset != expect) {
        return corrupt_at(seg, pos, "base offset not contiguous");
    }
    if (h->batch_bytes > seg->size_bytes - pos) {
        return corrupt_at(seg, pos, "batch runs past the end of the file");
    }
    return 0;
}

/* Starting point for a walk towards offset: the read hint or the index. */
static void walk_start(const struct segment *seg, int64_t offset, uint64_t *pos,
                       int64_t *expect)
{
    const struct index_entry *e =
        index_lookup_offset(&seg->idx, (uint32_t)(offset - seg->base_offset));

    *pos = e != NULL ? e->position : 0;
    *expect = e != NULL ? seg->base_offset + e->rel_offset : seg->base_offset;
    if (seg->hint_offset >= 0 && seg->hint_offset <= offset &&
        seg->hint_offset > *expect) {
        *pos = seg->hint_position;
        *expect = seg->hint_offset;
    }
}

int segment_find(struct segment *seg, int64_t offset, uint64_t *position,
                 struct batch_header *h)
{
    struct walk w = {.seg = seg};
    uint64_t pos;
    int64_t expect;
    int rv;

    memset(h, 0, sizeof *h);
    KAPPA_ASSERT(seg->is_loaded);
    KAPPA_ASSERT(offset >= seg->base_offset);
    if (offset - seg->base_offset > UINT32_MAX) {
        return corrupt_at(seg, seg->size_bytes, "offset beyond the segment");
    }
    walk_start(seg, offset, &pos, &expect);
    for (;;) {
        if (pos >= seg->size_bytes) {
            return corrupt_at(seg, pos, "offset missing from the segment");
        }
        rv = walk_header(&w, pos, expect, h);
        if (rv != 0) {
            return rv;
        }
        if (offset < h->base_offset + h->record_count) {
            *position = pos;
            return 0;
        }
        pos += h->batch_bytes;
        expect += h->record_count;
    }
}

/* Length of the run of whole, valid batches at the start of dst (got bytes
 * read), after the first one: stops at a bad header or CRC, a gap, a batch
 * at or past max_offset or one that was not read whole. */
static size_t batches_run(const uint8_t *dst, size_t got, size_t first_bytes,
                          int64_t expect, int64_t max_offset,
                          int64_t *next_offset)
{
    struct batch_header h;
    size_t off = first_bytes;

    while (got - off >= KAPPA_BATCH_HEADER_BYTES) {
        if (batch_header_decode(dst + off, got - off, &h) != 0 ||
            h.base_offset != expect || h.base_offset >= max_offset ||
            h.batch_bytes > got - off ||
            batch_verify(dst + off, got - off, &h) != 0) {
            break;
        }
        off += h.batch_bytes;
        expect += h.record_count;
    }
    *next_offset = expect;
    return off;
}

int segment_read(struct segment *seg, int64_t offset, int64_t max_offset,
                 size_t max_bytes, uint8_t *dst, size_t dst_cap, size_t *n_read)
{
    struct batch_header h;
    struct batch_header first;
    uint64_t pos;
    size_t want;
    size_t got;
    int64_t next_offset;
    int rv;

    *n_read = 0;
    rv = segment_find(seg, offset, &pos, &h);
    if (rv != 0) {
        return rv;
    }
    if (h.batch_bytes > dst_cap) {
        return KAPPA_ETOOBIG;
    }
    /* One pread of everything that may be returned: max_bytes (but at
     * least the first batch), capped by dst_cap and the segment's end. The
     * walk below then cuts at a batch boundary. */
    want = max_bytes > h.batch_bytes ? max_bytes : h.batch_bytes;
    want = want < dst_cap ? want : dst_cap;
    if (seg->size_bytes - pos < want) {
        want = (size_t)(seg->size_bytes - pos);
    }
    rv = io_pread(seg->fd, dst, want, pos, &got);
    if (rv != 0 || got < h.batch_bytes) {
        return KAPPA_EIO;
    }
    rv = batch_verify(dst, got, &first);
    if (rv != 0 || first.base_offset != h.base_offset) {
        return corrupt_at(seg, pos,
                          rv == KAPPA_ECRC ? "checksum mismatch"
                                           : "batch changed on disk");
    }
    *n_read = batches_run(dst, got, first.batch_bytes,
                          first.base_offset + first.record_count, max_offset,
                          &next_offset);
    seg->hint_offset = next_offset;
    seg->hint_position = pos + *n_read;
    return 0;
}

int segment_offset_for_timestamp(struct segment *seg, int64_t timestamp_ms,
                                 int64_t *offset)
{
    struct walk w = {.seg = seg};
    const struct index_entry *e = index_lookup_time(&seg->idx, timestamp_ms);
    uint64_t pos = e != NULL ? e->position : 0;
    int64_t expect =
        e != NULL ? seg->base_offset + e->rel_offset : seg->base_offset;
    struct batch_header h = {0};
    int rv;

    KAPPA_ASSERT(seg->is_loaded);
    while (pos < seg->size_bytes) {
        rv = walk_header(&w, pos, expect, &h);
        if (rv != 0) {
            return rv;
        }
        if (h.max_timestamp_ms >= timestamp_ms) {
            *offset = h.base_offset;
            return 0;
        }
        pos += h.batch_bytes;
        expect += h.record_count;
    }
    return 1;
}

int segment_boundary(struct segment *seg, int64_t offset, uint64_t *position)
{
    struct batch_header h = {0};
    int rv;

    if (offset == seg->base_offset) {
        *position = 0;
        return 0;
    }
    rv = segment_find(seg, offset, position, &h);
    if (rv != 0) {
        return rv;
    }
    return h.base_offset == offset ? 0 : KAPPA_EINVAL;
}

/* Max timestamp of the batches before position, from the last index entry
 * before it and a walk of the rest. */
static int max_timestamp_before(struct segment *seg, uint64_t position,
                                int64_t *max_timestamp_ms)
{
    struct walk w = {.seg = seg};
    const struct index_entry *last =
        seg->idx.n_entries > 0 ? &seg->idx.entries[seg->idx.n_entries - 1]
                               : NULL;
    uint64_t pos = last != NULL ? last->position : 0;
    int64_t expect =
        last != NULL ? seg->base_offset + last->rel_offset : seg->base_offset;
    int64_t m = last != NULL ? last->timestamp_ms : INT64_MIN;
    struct batch_header h = {0};
    int rv;

    while (pos < position) {
        rv = walk_header(&w, pos, expect, &h);
        if (rv != 0) {
            return rv;
        }
        m = h.max_timestamp_ms > m ? h.max_timestamp_ms : m;
        pos += h.batch_bytes;
        expect += h.record_count;
    }
    *max_timestamp_ms = m;
    return 0;
}

/* Removes the index files of a segment that is about to change. */
static void unlink_index_files(const struct segment *seg)
{
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, seg->base_offset, SEGMENT_EXT_INDEX);
    unlinkat(seg->dir->fd, name, 0);
    segment_name(name, seg->base_offset, SEGMENT_EXT_TIMEINDEX);
    unlinkat(seg->dir->fd, name, 0);
}

int segment_truncate(struct segment *seg, int64_t offset, char *errmsg)
{
    uint64_t pos = 0;
    int64_t max_ts;
    int rv;

    KAPPA_ASSERT(seg->is_loaded);
    rv = segment_boundary(seg, offset, &pos);
    if (rv == 0) {
        index_truncate(&seg->idx, (uint32_t)pos);
        rv = max_timestamp_before(seg, pos, &max_ts);
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "offset %" PRId64 ": %s", offset,
                            kappa_err_str(rv));
        return rv;
    }
    unlink_index_files(seg);
    if (ftruncate(seg->fd, (off_t)pos) != 0 || io_fsync(seg->fd) != 0) {
        kappa_errmsg_printf(errmsg, "truncate %s at %" PRIu64 ": %s",
                            seg->dir->path, pos, strerror(errno));
        return KAPPA_EIO;
    }
    seg->size_bytes = pos;
    seg->next_offset = offset;
    seg->max_timestamp_ms = max_ts;
    seg->last_index_position =
        seg->idx.n_entries > 0
            ? seg->idx.entries[seg->idx.n_entries - 1].position
            : 0;
    seg->hint_offset = -1;
    seg->is_active = true;
    if (pos == 0) {
        seg->roll_base_ms = INT64_MIN;
    }
    return 0;
}

int segment_remove(struct segment *seg, char *errmsg)
{
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, seg->base_offset, SEGMENT_EXT_LOG);
    if (unlinkat(seg->dir->fd, name, 0) != 0 && errno != ENOENT) {
        kappa_errmsg_printf(errmsg, "unlink %s/%s: %s", seg->dir->path, name,
                            strerror(errno));
        return KAPPA_EIO;
    }
    unlink_index_files(seg);
    segment_free(seg);
    return 0;
}
