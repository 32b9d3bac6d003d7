/*
 * Index files. Each segment NNNNNNNNNNNNNNNNNNNN.log has two companions,
 * NNNNNNNNNNNNNNNNNNNN.index (sparse offset index) and .timeindex (time
 * index), written together when the segment is sealed or the log closed,
 * and never fsynced: they can always be rebuilt from the .log, so the only
 * job of the format is to make damage and staleness detectable. Both files
 * start with the same 64-byte header; all integers are little-endian.
 *
 *   offset size field
 *   0      8    magic          "KPOFFIDX" (.index) or "KPTIMIDX" (.timeindex)
 *   8      4    version        u32  1
 *   12     4    entry_bytes    u32  8 (.index) or 12 (.timeindex)
 *   16     8    base_offset    i64  the segment's base offset (= file name)
 *   24     8    segment_bytes  u64  length of the .log when the file was
 *                                   written; any other length means stale
 *   32     8    max_timestamp  i64  largest batch max_timestamp in the
 *                                   segment, INT64_MIN when it is empty
 *   40     4    n_entries      u32  the same in both files
 *   44     4    entries_crc    u32  CRC-32C of bytes [64, 64 + n * size)
 *   48     12   reserved            zero
 *   60     4    header_crc     u32  CRC-32C of bytes [0, 60)
 *   64     ...  entries, n_entries of them
 *
 * .index entry, 8 bytes:
 *   0      4    rel_offset     u32  batch base offset - segment base offset
 *   4      4    position       u32  byte position of that batch in the .log
 *
 * .timeindex entry, 12 bytes:
 *   0      8    timestamp      i64  max timestamp of every batch before the
 *                                   entry's batch (running maximum)
 *   8      4    rel_offset     u32  same as the .index entry with this number
 *
 * Entries are strictly increasing in rel_offset and position, and
 * non-decreasing in timestamp. A new entry is made for the first batch that
 * starts index_interval_bytes or more past the previous entry (or past 0),
 * so there is one entry per ~4 KiB of log and per batch at most; position 0
 * is implied. A reader checks the header CRC, the magic, version, entry size,
 * base offset, segment length, file length, the entries CRC and the order of
 * the entries; anything wrong means "rebuild from the .log".
 *
 * The header is written last, after the entries, so a crash in the middle
 * leaves a zero header or an entries CRC that does not match.
 */
#include "index.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/err.h"
#include "io.h"

#define INDEX_VERSION      1
#define INDEX_MAGIC_OFFSET "KPOFFIDX"
#define INDEX_MAGIC_TIME   "KPTIMIDX"
#define INDEX_MAGIC_BYTES  8
/* Entries are encoded and decoded through a stack buffer of this many. */
#define INDEX_CHUNK_ENTRIES 256

_Static_assert(INDEX_HEADER_BYTES == 64, "index header is 64 bytes");

/* One file's identity: which magic and entry size it carries. */
struct index_kind {
    const char *magic;
    uint32_t entry_bytes;
};

static const struct index_kind kind_offset = {INDEX_MAGIC_OFFSET,
                                              INDEX_OFFSET_ENTRY_BYTES};
static const struct index_kind kind_time = {INDEX_MAGIC_TIME,
                                            INDEX_TIME_ENTRY_BYTES};

void index_init(struct index *idx)
{
    idx->entries = NULL;
    idx->n_entries = 0;
    idx->cap_entries = 0;
}

void index_free(struct index *idx)
{
    kappa_free(idx->entries);
    index_init(idx);
}

int index_reserve(struct index *idx, uint32_t extra)
{
    uint64_t need = (uint64_t)idx->n_entries + extra;
    uint64_t cap = idx->cap_entries;
    struct index_entry *entries;

    if (need <= idx->cap_entries) {
        return 0;
    }
    if (need > UINT32_MAX) {
        return KAPPA_ENOMEM;
    }
    /* A first reservation gets exactly what it asks for (loading a sealed
     * segment's index); later ones double (the active segment grows). */
    if (cap == 0) {
        cap = need < 64 ? 64 : need;
    }
    while (cap < need) {
        cap *= 2;
    }
    if (cap > UINT32_MAX) {
        cap = need;
    }
    entries = kappa_realloc(idx->entries, (size_t)cap * sizeof *entries);
    if (entries == NULL) {
        return KAPPA_ENOMEM;
    }
    idx->entries = entries;
    idx->cap_entries = (uint32_t)cap;
    return 0;
}

void index_add(struct index *idx, uint32_t rel_offset, uint32_t position,
               int64_t timestamp_ms)
{
    struct index_entry *e;

    KAPPA_ASSERT(idx->n_entries < idx->cap_entries);
    if (idx->n_entries > 0) {
        const struct index_entry *last = &idx->entries[idx->n_entries - 1];
        KAPPA_ASSERT(rel_offset > last->rel_offset);
        KAPPA_ASSERT(position > last->position);
        KAPPA_ASSERT(timestamp_ms >= last->timestamp_ms);
    }
    e = &idx->entries[idx->n_entries++];
    e->timestamp_ms = timestamp_ms;
    e->rel_offset = rel_offset;
    e->position = position;
}

void index_truncate(struct index *idx, uint32_t position)
{
    while (idx->n_entries > 0 &&
           idx->entries[idx->n_entries - 1].position >= position) {
        idx->n_entries--;
    }
}

const struct index_entry *index_lookup_offset(const struct index *idx,
                                              uint32_t rel_offset)
{
    uint32_t lo = 0;
    uint32_t hi = idx->n_entries;

    /* Invariant: entries [0, lo) are <= rel_offset, [hi, n) are above. */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx->entries[mid].rel_offset <= rel_offset) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == 0 ? NULL : &idx->entries[lo - 1];
}

const struct index_entry *index_lookup_time(const struct index *idx,
                                            int64_t timestamp_ms)
{
    uint32_t lo = 0;
    uint32_t hi = idx->n_entries;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx->entries[mid].timestamp_ms < timestamp_ms) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == 0 ? NULL : &idx->entries[lo - 1];
}

const struct index_entry *index_next(const struct index *idx,
                                     const struct index_entry *e)
{
    size_t i = (size_t)(e - idx->entries) + 1;
    return i < idx->n_entries ? &idx->entries[i] : NULL;
}

static void header_encode(const struct index_kind *kind,
                          const struct index_meta *meta, uint32_t entries_crc,
                          uint8_t *p)
{
    memset(p, 0, INDEX_HEADER_BYTES);
    memcpy(p, kind->magic, INDEX_MAGIC_BYTES);
    le32_put(p + 8, INDEX_VERSION);
    le32_put(p + 12, kind->entry_bytes);
    le64_put(p + 16, (uint64_t)meta->base_offset);
    le64_put(p + 24, meta->segment_bytes);
    le64_put(p + 32, (uint64_t)meta->max_timestamp_ms);
    le32_put(p + 40, meta->n_entries);
    le32_put(p + 44, entries_crc);
    le32_put(p + 60, crc32c(p, 60));
}

static void entry_encode(const struct index_kind *kind,
                         const struct index_entry *e, uint8_t *p)
{
    if (kind == &kind_offset) {
        le32_put(p, e->rel_offset);
        le32_put(p + 4, e->position);
    } else {
        le64_put(p, (uint64_t)e->timestamp_ms);
        le32_put(p + 8, e->rel_offset);
    }
}

/* Writes the entries from byte 64 on, then the header at 0. */
static int file_write(int fd, const struct index_kind *kind,
                      const struct index *idx, const struct index_meta *meta)
{
    uint8_t chunk[INDEX_CHUNK_ENTRIES * INDEX_TIME_ENTRY_BYTES];
    uint8_t header[INDEX_HEADER_BYTES];
    uint64_t pos = INDEX_HEADER_BYTES;
    uint32_t crc = 0;
    uint32_t i = 0;
    int rv;

    while (i < idx->n_entries) {
        uint32_t n = idx->n_entries - i;
        size_t bytes;
        if (n > INDEX_CHUNK_ENTRIES) {
            n = INDEX_CHUNK_ENTRIES;
        }
        for (uint32_t k = 0; k < n; k++) {
            entry_encode(kind, &idx->entries[i + k],
                         chunk + (size_t)k * kind->entry_bytes);
        }
        bytes = (size_t)n * kind->entry_bytes;
        crc = crc32c_extend(crc, chunk, bytes);
        rv = io_pwrite(fd, chunk, bytes, pos);
        if (rv != 0) {
            return rv;
        }
        pos += bytes;
        i += n;
    }
    header_encode(kind, meta, crc, header);
    return io_pwrite(fd, header, sizeof header, 0);
}

static int file_write_named(int dir_fd, const char *name,
                            const struct index_kind *kind,
                            const struct index *idx,
                            const struct index_meta *meta, char *errmsg)
{
    int fd;
    int rv;

    fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", name, strerror(errno));
        return kappa_err_from_errno(errno);
    }
    rv = file_write(fd, kind, idx, meta);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", name, strerror(errno));
        close(fd);
        unlinkat(dir_fd, name, 0);
        return rv;
    }
    close(fd);
    return 0;
}

int index_write(const struct index *idx, const struct index_meta *meta,
                int dir_fd, const char *offset_name, const char *time_name,
                char *errmsg)
{
    int rv;

    KAPPA_ASSERT(meta->n_entries == idx->n_entries);
    rv = file_write_named(dir_fd, offset_name, &kind_offset, idx, meta, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = file_write_named(dir_fd, time_name, &kind_time, idx, meta, errmsg);
    if (rv != 0) {
        unlinkat(dir_fd, offset_name, 0);
        return rv;
    }
    return 0;
}

/* An open index file with its header checked. */
struct index_file {
    int fd;
    const char *name;
    const struct index_kind *kind;
    uint32_t entries_crc;
    struct index_meta meta;
};

static int header_decode(struct index_file *f, const uint8_t *p, char *errmsg)
{
    if (le32_get(p + 60) != crc32c(p, 60)) {
        kappa_errmsg_printf(errmsg, "%s: header checksum mismatch", f->name);
        return KAPPA_ECORRUPT;
    }
    if (memcmp(p, f->kind->magic, INDEX_MAGIC_BYTES) != 0 ||
        le32_get(p + 8) != INDEX_VERSION ||
        le32_get(p + 12) != f->kind->entry_bytes) {
        kappa_errmsg_printf(errmsg, "%s: bad magic, version or entry size",
                            f->name);
        return KAPPA_ECORRUPT;
    }
    f->meta.base_offset = (int64_t)le64_get(p + 16);
    f->meta.segment_bytes = le64_get(p + 24);
    f->meta.max_timestamp_ms = (int64_t)le64_get(p + 32);
    f->meta.n_entries = le32_get(p + 40);
    f->entries_crc = le32_get(p + 44);
    return 0;
}

/* Checks the header against the segment and the file length. */
static int header_check(const struct index_file *f, int64_t base_offset,
                        uint64_t segment_bytes, uint64_t file_bytes,
                        char *errmsg)
{
    uint64_t want_bytes =
        INDEX_HEADER_BYTES + (uint64_t)f->meta.n_entries * f->kind->entry_bytes;

    if (f->meta.base_offset != base_offset) {
        kappa_errmsg_printf(errmsg, "%s: base offset %lld, want %lld", f->name,
                            (long long)f->meta.base_offset,
                            (long long)base_offset);
        return KAPPA_ECORRUPT;
    }
    if (f->meta.segment_bytes != segment_bytes) {
        kappa_errmsg_printf(errmsg, "%s: stale, covers %llu of %llu bytes",
                            f->name, (unsigned long long)f->meta.segment_bytes,
                            (unsigned long long)segment_bytes);
        return KAPPA_ECORRUPT;
    }
    /* Entries sit at distinct batch positions, so there cannot be more of
     * them than batch headers fit in the segment: this bounds the
     * allocation before anything is read. */
    if (f->meta.n_entries > segment_bytes / KAPPA_BATCH_HEADER_BYTES ||
        file_bytes != want_bytes) {
        kappa_errmsg_printf(errmsg, "%s: bad length %llu for %u entries",
                            f->name, (unsigned long long)file_bytes,
                            f->meta.n_entries);
        return KAPPA_ECORRUPT;
    }
    return 0;
}

static int file_open(struct index_file *f, int dir_fd, int64_t base_offset,
                     uint64_t segment_bytes, char *errmsg)
{
    uint8_t header[INDEX_HEADER_BYTES];
    struct stat st;
    size_t n_read;
    int rv;

    f->fd = openat(dir_fd, f->name, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", f->name, strerror(errno));
        return errno == ENOENT ? KAPPA_ENOENT : KAPPA_EIO;
    }
    rv = fstat(f->fd, &st) != 0 ? KAPPA_EIO : 0;
    if (rv == 0) {
        rv = io_pread(f->fd, header, sizeof header, 0, &n_read);
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "read %s: %s", f->name, strerror(errno));
        rv = KAPPA_EIO;
        goto err_after_open;
    }
    if (n_read < sizeof header) {
        kappa_errmsg_printf(errmsg, "%s: short header", f->name);
        rv = KAPPA_ECORRUPT;
        goto err_after_open;
    }
    rv = header_decode(f, header, errmsg);
    if (rv == 0) {
        rv = header_check(f, base_offset, segment_bytes, (uint64_t)st.st_size,
                          errmsg);
    }
    if (rv != 0) {
        goto err_after_open;
    }
    return 0;

err_after_open:
    close(f->fd);
    f->fd = -1;
    return rv;
}

/* Opens both files and checks that their headers agree. */
static int files_open(struct index_file *fo, struct index_file *ft, int dir_fd,
                      int64_t base_offset, uint64_t segment_bytes, char *errmsg)
{
    int rv;

    rv = file_open(fo, dir_fd, base_offset, segment_bytes, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = file_open(ft, dir_fd, base_offset, segment_bytes, errmsg);
    if (rv != 0) {
        goto err_after_offset;
    }
    if (fo->meta.n_entries != ft->meta.n_entries ||
        fo->meta.max_timestamp_ms != ft->meta.max_timestamp_ms) {
        kappa_errmsg_printf(errmsg, "%s and %s disagree", fo->name, ft->name);
        rv = KAPPA_ECORRUPT;
        goto err_after_time;
    }
    return 0;

err_after_time:
    close(ft->fd);
err_after_offset:
    close(fo->fd);
    return rv;
}

static void files_init(struct index_file *fo, struct index_file *ft,
                       const char *offset_name, const char *time_name)
{
    memset(fo, 0, sizeof *fo);
    memset(ft, 0, sizeof *ft);
    fo->name = offset_name;
    fo->kind = &kind_offset;
    fo->fd = -1;
    ft->name = time_name;
    ft->kind = &kind_time;
    ft->fd = -1;
}

int index_read_meta(int dir_fd, const char *offset_name, const char *time_name,
                    int64_t base_offset, uint64_t segment_bytes,
                    struct index_meta *meta, char *errmsg)
{
    struct index_file fo;
    struct index_file ft;
    int rv;

    files_init(&fo, &ft, offset_name, time_name);
    rv = files_open(&fo, &ft, dir_fd, base_offset, segment_bytes, errmsg);
    if (rv != 0) {
        return rv;
    }
    *meta = fo.meta;
    close(fo.fd);
    close(ft.fd);
    return 0;
}

/* Reads entries [first, first + n) of one file into buf, extending crc. */
static int chunk_read(struct index_file *f, uint32_t first, uint32_t n,
                      uint8_t *buf, uint32_t *crc, char *errmsg)
{
    size_t bytes = (size_t)n * f->kind->entry_bytes;
    uint64_t pos = INDEX_HEADER_BYTES + (uint64_t)first * f->kind->entry_bytes;
    size_t n_read;
    int rv;

    rv = io_pread(f->fd, buf, bytes, pos, &n_read);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "read %s: %s", f->name, strerror(errno));
        return KAPPA_EIO;
    }
    if (n_read != bytes) {
        kappa_errmsg_printf(errmsg, "%s: short read", f->name);
        return KAPPA_ECORRUPT;
    }
    *crc = crc32c_extend(*crc, buf, bytes);
    return 0;
}

/* Checks that entry i continues the order of entry i - 1. */
static int entry_check(const struct index *idx, uint32_t i,
                       uint64_t segment_bytes)
{
    const struct index_entry *e = &idx->entries[i];
    const struct index_entry *prev = i > 0 ? &idx->entries[i - 1] : NULL;

    if (e->position >= segment_bytes) {
        return KAPPA_ECORRUPT;
    }
    if (prev != NULL &&
        (e->rel_offset <= prev->rel_offset || e->position <= prev->position ||
         e->timestamp_ms < prev->timestamp_ms)) {
        return KAPPA_ECORRUPT;
    }
    return 0;
}

/* Decodes all entries of both files into idx, whose room is reserved. */
static int entries_read(struct index *idx, struct index_file *fo,
                        struct index_file *ft, uint64_t segment_bytes,
                        char *errmsg)
{
    uint8_t bo[INDEX_CHUNK_ENTRIES * INDEX_OFFSET_ENTRY_BYTES];
    uint8_t bt[INDEX_CHUNK_ENTRIES * INDEX_TIME_ENTRY_BYTES];
    uint32_t crc_o = 0;
    uint32_t crc_t = 0;
    uint32_t n_total = fo->meta.n_entries;
    int rv;

    for (uint32_t i = 0; i < n_total; i += INDEX_CHUNK_ENTRIES) {
        uint32_t n = n_total - i < INDEX_CHUNK_ENTRIES ? n_total - i
                                                       : INDEX_CHUNK_ENTRIES;
        rv = chunk_read(fo, i, n, bo, &crc_o, errmsg);
        if (rv == 0) {
            rv = chunk_read(ft, i, n, bt, &crc_t, errmsg);
        }
        if (rv != 0) {
            return rv;
        }
        for (uint32_t k = 0; k < n; k++) {
            struct index_entry *e = &idx->entries[i + k];
            const uint8_t *po = bo + (size_t)k * INDEX_OFFSET_ENTRY_BYTES;
            const uint8_t *pt = bt + (size_t)k * INDEX_TIME_ENTRY_BYTES;
            e->rel_offset = le32_get(po);
            e->position = le32_get(po + 4);
            e->timestamp_ms = (int64_t)le64_get(pt);
            if (le32_get(pt + 8) != e->rel_offset ||
                entry_check(idx, i + k, segment_bytes) != 0) {
                kappa_errmsg_printf(errmsg, "%s: entry %u out of order",
                                    fo->name, i + k);
                return KAPPA_ECORRUPT;
            }
        }
    }
    if (crc_o != fo->entries_crc || crc_t != ft->entries_crc) {
        kappa_errmsg_printf(errmsg, "%s: entries checksum mismatch",
                            crc_o != fo->entries_crc ? fo->name : ft->name);
        return KAPPA_ECORRUPT;
    }
    return 0;
}

int index_load(struct index *idx, int dir_fd, const char *offset_name,
               const char *time_name, int64_t base_offset,
               uint64_t segment_bytes, struct index_meta *meta, char *errmsg)
{
    struct index_file fo;
    struct index_file ft;
    int rv;

    KAPPA_ASSERT(idx->n_entries == 0);
    files_init(&fo, &ft, offset_name, time_name);
    rv = files_open(&fo, &ft, dir_fd, base_offset, segment_bytes, errmsg);
    if (rv != 0) {
        return rv;
    }
    rv = index_reserve(idx, fo.meta.n_entries);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "load %s: out of memory", offset_name);
        goto err_after_open;
    }
    rv = entries_read(idx, &fo, &ft, segment_bytes, errmsg);
    if (rv != 0) {
        goto err_after_reserve;
    }
    idx->n_entries = fo.meta.n_entries;
    *meta = fo.meta;
    close(fo.fd);
    close(ft.fd);
    return 0;

err_after_reserve:
    index_free(idx);
err_after_open:
    close(fo.fd);
    close(ft.fd);
    return rv;
}
