/*
 * The partition log: a directory of segments (segment.c) named by base
 * offset, with their index files (index.c):
 *
 *   <dir>/00000000000000000000.log        sealed segment, offsets [0, 1200)
 *   <dir>/00000000000000000000.index      its sparse offset index
 *   <dir>/00000000000000000000.timeindex  its time index
 *   <dir>/00000000000000001200.log        active segment, offsets [1200, end)
 *
 * Offsets: a segment's base offset is the offset of its first record; the
 * start offset of the log is the first segment's base, the end offset is
 * the active segment's next offset (last batch base + record_count). A new
 * log starts with an empty segment 0. Sealed segments end where the next
 * one begins.
 *
 * Recovery (log_open): the last segment is always scanned batch by batch
 * (header, CRC, contiguous offsets) and cut at the first bad byte, and its
 * index is rebuilt in memory; the cut is logged with file and position.
 * Sealed segments are trusted to the extent of their index file headers
 * (base offset, covered .log length, CRC); when those are missing, damaged
 * or stale the segment is scanned and the index files rewritten, and
 * corruption found on the way is logged, never fatal. Index files without
 * a .log are deleted.
 *
 * Fsync points, the only ones:
 * - log_open: fsync of the recovered last segment (after any cut) and of
 *   the directory; so flushed == end after open.
 * - log_append, log_append_exact: none. Data is durable once a group
 *   commit covers it.
 * - log_sync_execute: one fdatasync of a dup of the active segment's fd;
 *   every append before log_sync_prepare is then durable.
 * - roll (from log_append or log_housekeep): fdatasync of the segment being
 *   sealed, then the new segment file is created and the directory fsynced.
 *   Index files are never fsynced: they are checked and rebuilt.
 * - log_truncate: fsync of the cut segment and of the directory.
 * - log_reset: fsync of the directory after the segments are deleted and
 *   the new empty one created.
 * - log_close: fsync of the active segment.
 * - Retention deletes without fsync: a deleted segment that comes back
 *   after a crash is deleted again.
 *
 * A failed fdatasync/fsync of data may have dropped dirty pages (Linux
 * marks them clean), so it puts the log in a failed state: appends, syncs
 * and truncations return KAPPA_EIO until it is reopened, which rescans the
 * tail.
 *
 * Memory: per segment a small struct; the index entries (16 bytes per
 * index_interval_bytes of log) of the active segment and of at most
 * LOG_LOADED_SEALED_MAX sealed segments, loaded on demand with their fd
 * and dropped least recently used first.
 */
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"
#include "io.h"
#include "segment.h"

/* Sealed segments kept open with their index in memory. */
#define LOG_LOADED_SEALED_MAX 8
/* Segments in one log; with 1 GiB segments this is a petabyte. */
#define LOG_SEGMENTS_MAX (1u << 20)

struct log {
    struct store_dir dir;
    char *path;
    struct log_config cfg;
    struct segment **segs; /* by base offset; the last is active */
    uint32_t n_segs;
    uint32_t cap_segs;
    uint64_t size_bytes;
    int64_t flushed_offset;
    int64_t now_ms;        /* latest time the caller gave */
    uint64_t tick;         /* LRU clock */
    uint64_t truncate_gen; /* bumped by every truncation */
    uint64_t sync_gen;     /* truncate_gen when the pending sync began */
    int64_t empty_offset;  /* start and end while n_segs == 0 (a failed
                              log_reset) */
    bool is_sync_pending;
    bool is_failed;
};

void log_config_default(struct log_config *cfg)
{
    cfg->segment_bytes = 1ull << 30;
    cfg->segment_ms = 7ll * 24 * 3600 * 1000;
    cfg->retention_bytes = -1;
    cfg->retention_ms = 7ll * 24 * 3600 * 1000;
    cfg->index_interval_bytes = 4096;
}

static struct segment *active(const struct log *l)
{
    return l->segs[l->n_segs - 1];
}

int64_t log_start_offset(const struct log *l)
{
    return l->n_segs == 0 ? l->empty_offset : l->segs[0]->base_offset;
}

int64_t log_end_offset(const struct log *l)
{
    return l->n_segs == 0 ? l->empty_offset : active(l)->next_offset;
}

int64_t log_flushed_offset(const struct log *l)
{
    return l->flushed_offset;
}

uint64_t log_size_bytes(const struct log *l)
{
    return l->size_bytes;
}

uint32_t log_segment_count(const struct log *l)
{
    return l->n_segs;
}

static int config_check(const struct log_config *cfg, char *errmsg)
{
    if (cfg->segment_bytes == 0 ||
        cfg->segment_bytes > KAPPA_SEGMENT_BYTES_MAX) {
        kappa_errmsg_printf(errmsg, "segment_bytes must be in [1, %llu]",
                            (unsigned long long)KAPPA_SEGMENT_BYTES_MAX);
        return KAPPA_EINVAL;
    }
    if (cfg->segment_ms < 1 || cfg->retention_bytes < -1 ||
        cfg->retention_ms < -1) {
        kappa_errmsg_printf(errmsg, "segment_ms must be >= 1, retention "
                                    "limits >= -1");
        return KAPPA_EINVAL;
    }
    return 0;
}

/* Index of the segment holding offset: the last one with base <= offset. */
static uint32_t segment_index_of(const struct log *l, int64_t offset)
{
    uint32_t lo = 0;
    uint32_t hi = l->n_segs;

    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (l->segs[mid]->base_offset <= offset) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static int segs_reserve(struct log *l, uint32_t extra)
{
    uint64_t need = (uint64_t)l->n_segs + extra;
    uint64_t cap = l->cap_segs == 0 ? 16 : l->cap_segs;
    struct segment **segs;

    if (need <= l->cap_segs) {
        return 0;
    }
    if (need > LOG_SEGMENTS_MAX) {
        return KAPPA_ENOSPC;
    }
    while (cap < need) {
        cap *= 2;
    }
    segs = kappa_realloc(l->segs, (size_t)cap * sizeof(struct segment *));
    if (segs == NULL) {
        return KAPPA_ENOMEM;
    }
    l->segs = segs;
    l->cap_segs = (uint32_t)cap;
    return 0;
}

/* Unloads least recently used sealed segments past the limit, never
 * keep. */
static void evict(struct log *l, const struct segment *keep)
{
    for (;;) {
        struct segment *lru = NULL;
        uint32_t n_loaded = 0;
        for (uint32_t i = 0; i < l->n_segs; i++) {
            struct segment *seg = l->segs[i];
            if (seg->is_active || !seg->is_loaded) {
                continue;
            }
            n_loaded++;
            if (seg != keep &&
                (lru == NULL || seg->used_tick < lru->used_tick)) {
                lru = seg;
            }
        }
        if (n_loaded <= LOG_LOADED_SEALED_MAX || lru == NULL) {
            return;
        }
        segment_unload(lru);
    }
}

/* Makes seg ready for reads: open with its index loaded. */
static int use(struct log *l, struct segment *seg)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv;

    seg->used_tick = ++l->tick;
    if (seg->is_loaded) {
        return 0;
    }
    rv = segment_load(seg, errmsg);
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, "store", "load segment %" PRId64 ": %s",
                  seg->base_offset, errmsg);
        return rv;
    }
    evict(l, seg);
    return 0;
}

/* Sorted base offsets of the .log files in the directory. */
struct bases {
    int64_t *v;
    uint32_t n;
    uint32_t cap;
};

static int bases_push(struct bases *b, int64_t base)
{
    if (b->n == b->cap) {
        uint32_t cap = b->cap == 0 ? 16 : b->cap * 2;
        int64_t *v;
        if (b->n >= LOG_SEGMENTS_MAX) {
            return KAPPA_EIO;
        }
        v = kappa_realloc(b->v, (size_t)cap * sizeof *v);
        if (v == NULL) {
            return KAPPA_ENOMEM;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = base;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef int (*log_dir_entry_cb)(struct log *l, const char *name, int64_t base,
                                enum segment_ext ext, void *arg);

/* Calls fn for every segment file name in the directory. */
static int dir_each(struct log *l, void *arg, char *errmsg, log_dir_entry_cb fn)
{
    struct dirent *de;
    DIR *d;
    int fd = dup(l->dir.fd);
    int rv = 0;

    d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        kappa_errmsg_printf(errmsg, "list %s: %s", l->path, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return KAPPA_EIO;
    }
    rewinddir(d);
    while (rv == 0 && (de = readdir(d)) != NULL) {
        int64_t base;
        enum segment_ext ext;
        if (segment_name_parse(de->d_name, &base, &ext) == 0) {
            rv = fn(l, de->d_name, base, ext, arg);
        }
    }
    closedir(d);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "list %s: %s", l->path, kappa_err_str(rv));
    }
    return rv;
}

static int collect_log(struct log *l, const char *name, int64_t base,
                       enum segment_ext ext, void *arg)
{
    (void)l;
    (void)name;
    return ext == SEGMENT_EXT_LOG ? bases_push(arg, base) : 0;
}

static int remove_orphan(struct log *l, const char *name, int64_t base,
                         enum segment_ext ext, void *arg)
{
    const struct bases *b = arg;

    if (ext != SEGMENT_EXT_LOG &&
        (b->n == 0 ||
         bsearch(&base, b->v, b->n, sizeof *b->v, cmp_i64) == NULL)) {
        kappa_log(KAPPA_LOG_INFO, "store", "removing orphan %s/%s", l->path,
                  name);
        unlinkat(l->dir.fd, name, 0);
    }
    return 0;
}

/* Opens every segment found: all but the last sealed, the last
 * recovered. */
static int segments_open(struct log *l, const struct bases *b, int64_t now_ms,
                         char *errmsg)
{
    uint32_t interval = l->cfg.index_interval_bytes;
    int rv;

    rv = segs_reserve(l, b->n);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "open: %s", kappa_err_str(rv));
        return rv;
    }
    for (uint32_t i = 0; i + 1 < b->n; i++) {
        struct segment *seg;
        rv = segment_open_sealed(&l->dir, b->v[i], interval, &seg, errmsg);
        if (rv != 0) {
            return rv;
        }
        l->segs[l->n_segs++] = seg;
        l->size_bytes += seg->size_bytes;
        seg->used_tick = ++l->tick;
        evict(l, NULL);
    }
    rv = segment_recover(&l->dir, b->v[b->n - 1], interval, now_ms,
                         &l->segs[l->n_segs], errmsg);
    if (rv != 0) {
        return rv;
    }
    l->size_bytes += l->segs[l->n_segs]->size_bytes;
    l->n_segs++;
    return 0;
}

/* Lists, cleans up and opens the segments, or creates segment 0. */
static int segments_load(struct log *l, int64_t now_ms, char *errmsg)
{
    struct bases b = {0};
    int rv;

    rv = dir_each(l, &b, errmsg, collect_log);
    if (rv != 0) {
        goto out;
    }
    if (b.n > 0) {
        qsort(b.v, b.n, sizeof *b.v, cmp_i64);
    }
    rv = dir_each(l, &b, errmsg, remove_orphan);
    if (rv != 0) {
        goto out;
    }
    if (b.n == 0) {
        rv = segs_reserve(l, 1);
        if (rv == 0) {
            rv = segment_create(&l->dir, 0, l->cfg.index_interval_bytes,
                                &l->segs[0], errmsg);
        }
        if (rv == 0) {
            l->n_segs = 1;
        }
        goto out;
    }
    rv = segments_open(l, &b, now_ms, errmsg);
out:
    kappa_free(b.v);
    return rv;
}

static void segments_free(struct log *l)
{
    for (uint32_t i = 0; i < l->n_segs; i++) {
        segment_free(l->segs[i]);
    }
    kappa_free(l->segs);
    l->segs = NULL;
    l->n_segs = 0;
}

static int dir_open(struct log *l, const char *dir, char *errmsg)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        kappa_errmsg_printf(errmsg, "mkdir %s: %s", dir, strerror(errno));
        return KAPPA_EIO;
    }
    l->dir.fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dir.fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", dir, strerror(errno));
        return KAPPA_EIO;
    }
    return 0;
}

int log_open(const char *dir, const struct log_config *cfg, int64_t now_ms,
             struct log **out, char *errmsg)
{
    struct log *l;
    int rv;

    rv = config_check(cfg, errmsg);
    if (rv != 0) {
        return rv;
    }
    l = kappa_calloc(1, sizeof *l);
    if (l == NULL) {
        rv = KAPPA_ENOMEM;
        goto err;
    }
    l->cfg = *cfg;
    l->now_ms = now_ms;
    l->path = kappa_strdup(dir);
    if (l->path == NULL) {
        rv = KAPPA_ENOMEM;
        goto err_after_alloc;
    }
    l->dir.path = l->path;
    rv = dir_open(l, dir, errmsg);
    if (rv != 0) {
        goto err_after_path;
    }
    rv = segments_load(l, now_ms, errmsg);
    if (rv != 0) {
        goto err_after_dir;
    }
    /* Creating segment 0 or cutting a tail changed the directory or a
     * file length; either way the directory entry must be durable. */
    if (io_fsync(l->dir.fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", dir, strerror(errno));
        rv = KAPPA_EIO;
        goto err_after_dir;
    }
    l->flushed_offset = log_end_offset(l);
    kappa_log(KAPPA_LOG_INFO, "store",
              "opened %s: %u segments, offsets [%" PRId64 ", %" PRId64 ")", dir,
              l->n_segs, log_start_offset(l), log_end_offset(l));
    *out = l;
    return 0;

err_after_dir:
    segments_free(l);
    close(l->dir.fd);
err_after_path:
    kappa_free(l->path);
err_after_alloc:
    kappa_free(l);
err:
    if (rv == KAPPA_ENOMEM) {
        kappa_errmsg_printf(errmsg, "open %s: out of memory", dir);
    }
    return rv;
}

static void log_free(struct log *l)
{
    segments_free(l);
    close(l->dir.fd);
    kappa_free(l->path);
    kappa_free(l);
}

void log_close(struct log *l)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct segment *seg;

    if (l == NULL) {
        return;
    }
    /* The pending sync's completion would touch freed memory. */
    KAPPA_ASSERT(!l->is_sync_pending);
    if (l->n_segs == 0) { /* after a failed log_reset */
        log_free(l);
        return;
    }
    seg = active(l);
    if (!l->is_failed && io_fsync(seg->fd) != 0) {
        kappa_log(KAPPA_LOG_ERROR, "store", "close %s: fsync: %s", l->path,
                  strerror(errno));
    }
    if (segment_write_index(seg, errmsg) != 0) {
        kappa_log(KAPPA_LOG_WARN, "store", "close %s: %s", l->path, errmsg);
    }
    log_free(l);
}

int log_destroy(struct log *l)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv = 0;

    KAPPA_ASSERT(!l->is_sync_pending);
    while (l->n_segs > 0 && rv == 0) {
        rv = segment_remove(l->segs[l->n_segs - 1], errmsg);
        if (rv == 0) {
            l->n_segs--;
        }
    }
    if (rv == 0 && rmdir(l->path) != 0) {
        kappa_errmsg_printf(errmsg, "rmdir %s: %s", l->path, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, "store", "destroy: %s", errmsg);
    }
    log_free(l);
    return rv;
}

/* What an append holds, from its batch headers. */
struct append_plan {
    uint32_t n_batches;
    uint64_t n_records;
};

/* Walks the headers of an append. The broker validated the batches; this
 * only guards the offsets and sizes the store depends on. */
static int plan_append(const uint8_t *p, size_t n, struct append_plan *plan,
                       char *errmsg)
{
    struct batch_header h;
    size_t pos = 0;

    plan->n_batches = 0;
    plan->n_records = 0;
    if (n == 0 || n > KAPPA_SEGMENT_APPEND_BYTES_MAX) {
        kappa_errmsg_printf(errmsg, "append of %zu bytes", n);
        return n == 0 ? KAPPA_EINVAL : KAPPA_ETOOBIG;
    }
    while (pos < n) {
        if (batch_header_decode(p + pos, n - pos, &h) != 0 ||
            h.batch_bytes > n - pos) {
            kappa_errmsg_printf(errmsg, "append: bad batch at byte %zu", pos);
            return KAPPA_EINVAL;
        }
        plan->n_batches++;
        plan->n_records += h.record_count;
        pos += h.batch_bytes;
    }
    return 0;
}

/* now_ms - since_ms >= age_ms, without overflow for any timestamps (a
 * segment's age may count from a producer's timestamp). */
static bool is_older(int64_t now_ms, int64_t since_ms, int64_t age_ms)
{
    int64_t d;

    if (__builtin_sub_overflow(now_ms, since_ms, &d)) {
        return since_ms < now_ms;
    }
    return d >= age_ms;
}

static bool should_roll(const struct log *l, const struct segment *seg,
                        size_t n, uint64_t n_records, int64_t now_ms)
{
    if (seg->size_bytes == 0) {
        return false;
    }
    return seg->size_bytes + n > l->cfg.segment_bytes ||
           is_older(now_ms, seg->roll_base_ms, l->cfg.segment_ms) ||
           (uint64_t)(seg->next_offset - seg->base_offset) + n_records >
               UINT32_MAX;
}

/* Seals the active segment and starts a new one at the end offset. */
static int roll(struct log *l, char *errmsg)
{
    struct segment *old = active(l);
    struct segment *seg;
    int rv;

    rv = segs_reserve(l, 1);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "roll: %s", kappa_err_str(rv));
        return rv;
    }
    rv = segment_seal(old, errmsg);
    if (rv != 0) {
        l->is_failed = true;
        return rv;
    }
    rv = segment_create(&l->dir, old->next_offset, l->cfg.index_interval_bytes,
                        &seg, errmsg);
    if (rv != 0) {
        segment_unseal(old);
        return rv;
    }
    if (io_fsync(l->dir.fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", l->path, strerror(errno));
        segment_remove(seg, errmsg);
        segment_unseal(old);
        return KAPPA_EIO;
    }
    l->segs[l->n_segs++] = seg;
    old->used_tick = ++l->tick;
    evict(l, NULL);
    /* The sealed segment was fdatasynced, and the ones before it when they
     * were sealed. */
    if (seg->base_offset > l->flushed_offset) {
        l->flushed_offset = seg->base_offset;
    }
    kappa_log(KAPPA_LOG_DEBUG, "store", "rolled %s at offset %" PRId64, l->path,
              seg->base_offset);
    return 0;
}

/* What every append checks before writing: the log works, offsets are
 * left, and the active segment is rolled if the append does not fit. */
static int append_begin(struct log *l, size_t n, uint64_t n_records,
                        int64_t now_ms, char *errmsg)
{
    if (n_records > (uint64_t)(INT64_MAX - log_end_offset(l))) {
        kappa_errmsg_printf(errmsg, "append: offsets exhausted");
        return KAPPA_ETOOBIG;
    }
    if (should_roll(l, active(l), n, n_records, now_ms)) {
        return roll(l, errmsg);
    }
    return 0;
}

static void append_done(struct segment *seg, int64_t now_ms)
{
    if (seg->roll_base_ms == INT64_MIN) {
        seg->roll_base_ms = now_ms;
    }
}

int log_append(struct log *l, uint8_t *p, size_t n, uint64_t term,
               int64_t now_ms, int64_t *base_offset, char *errmsg)
{
    struct append_plan plan;
    struct segment *seg;
    int64_t start;
    int rv;

    if (l->is_failed) {
        kappa_errmsg_printf(errmsg, "log %s failed earlier", l->path);
        return KAPPA_EIO;
    }
    l->now_ms = now_ms;
    rv = plan_append(p, n, &plan, errmsg);
    if (rv == 0) {
        rv = append_begin(l, n, plan.n_records, now_ms, errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    seg = active(l);
    start = seg->next_offset;
    rv = segment_append(seg, p, n, plan.n_batches, term, errmsg);
    if (rv != 0) {
        l->is_failed = seg->is_failed;
        return rv;
    }
    append_done(seg, now_ms);
    l->size_bytes += n;
    *base_offset = start;
    return 0;
}

/* Checks an exact append: whole batches with valid headers and CRCs whose
 * base offsets continue the log. */
static int plan_exact(const struct log *l, const uint8_t *p, size_t n,
                      struct append_plan *plan, char *errmsg)
{
    int64_t next = log_end_offset(l);
    struct batch_header h;
    size_t pos = 0;

    plan->n_batches = 0;
    plan->n_records = 0;
    if (n == 0 || n > KAPPA_SEGMENT_APPEND_BYTES_MAX) {
        kappa_errmsg_printf(errmsg, "append of %zu bytes", n);
        return n == 0 ? KAPPA_EINVAL : KAPPA_ETOOBIG;
    }
    while (pos < n) {
        if (batch_verify(p + pos, n - pos, &h) != 0) {
            kappa_errmsg_printf(errmsg, "append: bad batch at byte %zu", pos);
            return KAPPA_EINVAL;
        }
        if (h.base_offset != next) {
            kappa_errmsg_printf(errmsg,
                                "append: batch at byte %zu has base offset "
                                "%" PRId64 ", want %" PRId64,
                                pos, h.base_offset, next);
            return KAPPA_EINVAL;
        }
        next += (int64_t)h.record_count;
        plan->n_batches++;
        plan->n_records += h.record_count;
        pos += h.batch_bytes;
    }
    return 0;
}

/* Bytes and batches from pos up to the first batch of another term. */
static size_t term_run(const uint8_t *p, size_t n, size_t pos,
                       uint32_t *n_batches)
{
    uint64_t term = le64_get(p + pos + KAPPA_BATCH_OFF_TERM);
    size_t end = pos;

    *n_batches = 0;
    while (end < n && le64_get(p + end + KAPPA_BATCH_OFF_TERM) == term) {
        end += batch_bytes(p + end);
        (*n_batches)++;
    }
    return end - pos;
}

int log_append_exact(struct log *l, uint8_t *p, size_t n, int64_t now_ms,
                     char *errmsg)
{
    struct append_plan plan;
    struct segment *seg;
    size_t pos = 0;
    int rv;

    if (l->is_failed) {
        kappa_errmsg_printf(errmsg, "log %s failed earlier", l->path);
        return KAPPA_EIO;
    }
    l->now_ms = now_ms;
    rv = plan_exact(l, p, n, &plan, errmsg);
    if (rv == 0) {
        rv = append_begin(l, n, plan.n_records, now_ms, errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    seg = active(l);
    while (pos < n) {
        uint32_t n_batches;
        size_t run = term_run(p, n, pos, &n_batches);
        uint64_t term = le64_get(p + pos + KAPPA_BATCH_OFF_TERM);
        /* The offsets and the term are rewritten with what they hold. */
        rv = segment_append(seg, p + pos, run, n_batches, term, errmsg);
        if (rv != 0) {
            l->is_failed = seg->is_failed || pos > 0;
            return rv;
        }
        l->size_bytes += run;
        pos += run;
    }
    append_done(seg, now_ms);
    return 0;
}

int log_sync_prepare(struct log *l, struct log_sync *s)
{
    if (l->is_sync_pending) {
        return KAPPA_EBUSY;
    }
    if (l->is_failed) {
        return KAPPA_EIO;
    }
    if (l->flushed_offset >= log_end_offset(l)) {
        return 1;
    }
    s->fd = dup(active(l)->fd);
    if (s->fd < 0) {
        return kappa_err_from_errno(errno);
    }
    s->end_offset = log_end_offset(l);
    s->rv = 0;
    l->is_sync_pending = true;
    l->sync_gen = l->truncate_gen;
    return 0;
}

void log_sync_execute(struct log_sync *s)
{
    s->rv = io_fdatasync(s->fd);
}

void log_sync_complete(struct log *l, struct log_sync *s)
{
    KAPPA_ASSERT(l->is_sync_pending);
    close(s->fd);
    s->fd = -1;
    l->is_sync_pending = false;
    if (s->rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, "store", "fdatasync %s: %s; log failed",
                  l->path, kappa_err_str(s->rv));
        l->is_failed = true;
        return;
    }
    /* A truncation since prepare may have replaced the bytes the sync
     * covered with new, unsynced ones. */
    if (l->sync_gen == l->truncate_gen && s->end_offset > l->flushed_offset) {
        l->flushed_offset = s->end_offset;
    }
}

int log_sync_now(struct log *l)
{
    struct log_sync s;
    int rv = log_sync_prepare(l, &s);

    if (rv == 1) {
        return 0;
    }
    if (rv != 0) {
        return rv;
    }
    log_sync_execute(&s);
    log_sync_complete(l, &s);
    return s.rv;
}

/* Checks offset for a lookup and returns the loaded segment holding it. */
static int segment_for(struct log *l, int64_t offset, struct segment **out)
{
    struct segment *seg;
    int rv;

    if (offset < log_start_offset(l) || offset >= log_end_offset(l)) {
        return KAPPA_EOFFSET_RANGE;
    }
    seg = l->segs[segment_index_of(l, offset)];
    rv = use(l, seg);
    if (rv != 0) {
        return rv;
    }
    *out = seg;
    return 0;
}

int log_read(struct log *l, int64_t offset, int64_t max_offset,
             size_t max_bytes, uint8_t *dst, size_t dst_cap, size_t *n_read)
{
    int64_t end = log_end_offset(l);
    int64_t limit = max_offset < end ? max_offset : end;
    struct segment *seg;
    int rv;

    *n_read = 0;
    if (offset < log_start_offset(l) || offset > end) {
        return KAPPA_EOFFSET_RANGE;
    }
    if (offset >= limit) {
        return 0;
    }
    rv = segment_for(l, offset, &seg);
    if (rv == 0) {
        rv = segment_read(seg, offset, limit, max_bytes, dst, dst_cap, n_read);
    }
    if (rv == KAPPA_EIO) {
        kappa_log(KAPPA_LOG_ERROR, "store", "read %s at offset %" PRId64 ": %s",
                  l->path, offset, strerror(errno));
    }
    return rv;
}

int log_batch_bytes_at(struct log *l, int64_t offset, uint32_t *batch_bytes)
{
    struct batch_header h;
    struct segment *seg;
    uint64_t pos;
    int rv;

    rv = segment_for(l, offset, &seg);
    if (rv == 0) {
        rv = segment_find(seg, offset, &pos, &h);
    }
    if (rv == 0) {
        *batch_bytes = h.batch_bytes;
    }
    return rv;
}

int log_offset_for_timestamp(struct log *l, int64_t timestamp_ms,
                             int64_t *offset)
{
    for (uint32_t i = 0; i < l->n_segs; i++) {
        struct segment *seg = l->segs[i];
        int rv;
        /* No batch of a segment can qualify when its maximum does not. */
        if (seg->size_bytes == 0 || seg->max_timestamp_ms < timestamp_ms) {
            continue;
        }
        rv = use(l, seg);
        if (rv == 0) {
            rv = segment_offset_for_timestamp(seg, timestamp_ms, offset);
        }
        if (rv != 1) {
            return rv;
        }
    }
    *offset = log_end_offset(l);
    return 0;
}

/* Deletes the segments after index keep, newest first, so that a crash
 * leaves a prefix of the log. */
static int remove_after(struct log *l, uint32_t keep, char *errmsg)
{
    while (l->n_segs > keep + 1) {
        struct segment *seg = l->segs[l->n_segs - 1];
        uint64_t bytes = seg->size_bytes;
        int rv = segment_remove(seg, errmsg);
        if (rv != 0) {
            return rv;
        }
        l->n_segs--;
        l->size_bytes -= bytes;
    }
    return 0;
}

int log_truncate(struct log *l, int64_t from_offset, char *errmsg)
{
    uint32_t i;
    struct segment *seg;
    uint64_t pos;
    uint64_t old_bytes;
    int rv;

    if (l->is_failed) {
        kappa_errmsg_printf(errmsg, "log %s failed earlier", l->path);
        return KAPPA_EIO;
    }
    if (from_offset < log_start_offset(l) || from_offset > log_end_offset(l)) {
        kappa_errmsg_printf(
            errmsg,
            "truncate at %" PRId64 ": not in [%" PRId64 ", %" PRId64 "]",
            from_offset, log_start_offset(l), log_end_offset(l));
        return KAPPA_EINVAL;
    }
    if (from_offset == log_end_offset(l)) {
        return 0;
    }
    i = segment_index_of(l, from_offset);
    seg = l->segs[i];
    rv = use(l, seg);
    if (rv == 0) {
        rv = segment_boundary(seg, from_offset, &pos);
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "truncate at %" PRId64 ": %s", from_offset,
                            rv == KAPPA_EINVAL ? "not a batch boundary"
                                               : kappa_err_str(rv));
        return rv;
    }
    /* From here on a failure leaves the log in between: refuse further
     * writes until it is reopened and recovered. */
    old_bytes = seg->size_bytes;
    rv = remove_after(l, i, errmsg);
    if (rv == 0) {
        rv = segment_truncate(seg, from_offset, errmsg);
    }
    if (rv == 0 && io_fsync(l->dir.fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", l->path, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (rv != 0) {
        l->is_failed = true;
        return rv;
    }
    l->size_bytes -= old_bytes - seg->size_bytes;
    if (seg->size_bytes > 0 && seg->roll_base_ms == INT64_MIN) {
        seg->roll_base_ms = l->now_ms;
    }
    l->truncate_gen++;
    l->flushed_offset = from_offset;
    kappa_log(KAPPA_LOG_INFO, "store", "truncated %s at offset %" PRId64,
              l->path, from_offset);
    return 0;
}

int log_reset(struct log *l, int64_t start_offset, char *errmsg)
{
    int rv = 0;

    if (l->is_failed) {
        kappa_errmsg_printf(errmsg, "log %s failed earlier", l->path);
        return KAPPA_EIO;
    }
    if (start_offset < 0) {
        kappa_errmsg_printf(errmsg, "reset at %" PRId64, start_offset);
        return KAPPA_EINVAL;
    }
    /* A pending sync must not advance flushed over the new, unsynced
     * bytes; its dup'd fd keeps the deleted file alive until then. */
    l->truncate_gen++;
    l->empty_offset = start_offset;
    while (rv == 0 && l->n_segs > 0) {
        struct segment *seg = l->segs[l->n_segs - 1];
        uint64_t bytes = seg->size_bytes;
        rv = segment_remove(seg, errmsg);
        if (rv == 0) {
            l->n_segs--;
            l->size_bytes -= bytes;
        }
    }
    if (rv == 0) {
        rv = segment_create(&l->dir, start_offset, l->cfg.index_interval_bytes,
                            &l->segs[0], errmsg);
    }
    if (rv == 0) {
        l->n_segs = 1;
        if (io_fsync(l->dir.fd) != 0) {
            kappa_errmsg_printf(errmsg, "fsync %s: %s", l->path,
                                strerror(errno));
            rv = KAPPA_EIO;
        }
    }
    if (rv != 0) {
        l->is_failed = true;
        return rv;
    }
    l->flushed_offset = start_offset;
    kappa_log(KAPPA_LOG_INFO, "store", "reset %s to start at offset %" PRId64,
              l->path, start_offset);
    return 0;
}

static bool is_expired(const struct log *l, const struct segment *seg,
                       int64_t now_ms)
{
    int64_t retention_ms = l->cfg.retention_ms;
    int64_t retention_bytes = l->cfg.retention_bytes;

    int64_t cutoff_ms;

    /* An empty sealed segment (max INT64_MIN) is always expired. */
    if (retention_ms >= 0 &&
        !__builtin_sub_overflow(now_ms, retention_ms, &cutoff_ms) &&
        seg->max_timestamp_ms < cutoff_ms) {
        return true;
    }
    /* Kafka's rule: delete a segment only if what stays is still at least
     * retention_bytes, so the log never drops below the limit. */
    return retention_bytes >= 0 &&
           l->size_bytes - seg->size_bytes >= (uint64_t)retention_bytes;
}

int log_housekeep(struct log *l, int64_t now_ms, uint32_t *n_deleted)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct segment *seg;
    int rv;

    *n_deleted = 0;
    if (l->is_failed) {
        return KAPPA_EIO;
    }
    seg = active(l);
    l->now_ms = now_ms;
    if (seg->size_bytes > 0 &&
        is_older(now_ms, seg->roll_base_ms, l->cfg.segment_ms)) {
        rv = roll(l, errmsg);
        if (rv != 0) {
            kappa_log(KAPPA_LOG_ERROR, "store", "roll %s: %s", l->path, errmsg);
            return rv;
        }
    }
    while (l->n_segs > 1 && is_expired(l, l->segs[0], now_ms)) {
        seg = l->segs[0];
        uint64_t bytes = seg->size_bytes;
        int64_t base = seg->base_offset;
        rv = segment_remove(seg, errmsg);
        if (rv != 0) {
            kappa_log(KAPPA_LOG_ERROR, "store", "retention: %s", errmsg);
            return rv;
        }
        memmove(&l->segs[0], &l->segs[1],
                (l->n_segs - 1) * sizeof(struct segment *));
        l->n_segs--;
        l->size_bytes -= bytes;
        (*n_deleted)++;
        kappa_log(KAPPA_LOG_INFO, "store",
                  "retention deleted segment %" PRId64 " of %s", base, l->path);
    }
    return 0;
}
