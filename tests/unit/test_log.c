/* Unit tests for broker/store/log: round trips across rolls, roll by size
 * and age, retention, truncation, recovery of torn and corrupt tails,
 * corruption in sealed segments, index rebuilds, time lookups, read limits,
 * the group-commit API, replica appends (log_append_exact) and log_reset.
 * Every test runs in its own mkdtemp directory. */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/store/log.h"
#include "common/alloc.h"
#include "common/batch.h"
#include "common/err.h"

#define TERM        7
#define RECORDS     3   /* records per test batch */
#define VALUE       100 /* value bytes per record */
#define BATCHES_MAX 256
#define READ_CAP    (1u << 20)

struct fx {
    char root[128];
    char dir[160];
    char capture_path[192];
    int saved_stderr;
    struct log_config cfg;
    struct log *l;
    size_t batch_bytes; /* of a standard test batch */
    /* Every batch appended, by base offset, to check reads against. */
    int64_t first_ts[BATCHES_MAX];
    int64_t max_ts[BATCHES_MAX];
    int64_t base[BATCHES_MAX];
    uint32_t n_batches;
    uint8_t *dst;
};

/* Builds one batch of n_records records with value_bytes-byte values and
 * timestamps ts, ts + 1, ... into b. */
static void batch_make(struct batch_builder *b, uint32_t n_records,
                       uint32_t value_bytes, int64_t ts)
{
    uint8_t *value = malloc(value_bytes + 1);

    assert_non_null(value);
    for (uint32_t i = 0; i < value_bytes; i++) {
        value[i] = (uint8_t)(i * 7 + (uint32_t)ts);
    }
    batch_builder_init(b);
    for (uint32_t i = 0; i < n_records; i++) {
        assert_int_equal(
            batch_builder_add(b, "k", 1, value, value_bytes, NULL, 0, ts + i),
            0);
    }
    assert_int_equal(
        batch_builder_finish(b, KAPPA_COMPRESSION_NONE, -1, -1, -1), 0);
    free(value);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    struct batch_builder b;

    assert_non_null(f);
    strcpy(f->root, "/tmp/kappa-test-log-XXXXXX");
    assert_non_null(mkdtemp(f->root));
    snprintf(f->dir, sizeof f->dir, "%s/p0", f->root);
    snprintf(f->capture_path, sizeof f->capture_path, "%s/stderr.txt", f->root);
    f->saved_stderr = -1;
    log_config_default(&f->cfg);
    f->cfg.index_interval_bytes = 1000;
    batch_make(&b, RECORDS, VALUE, 0);
    f->batch_bytes = b.buf.len;
    batch_builder_free(&b);
    f->dst = malloc(READ_CAP);
    assert_non_null(f->dst);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    log_close(f->l);
    nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f->dst);
    free(f);
    return 0;
}

static void fx_open(struct fx *f, int64_t now_ms)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    int rv = log_open(f->dir, &f->cfg, now_ms, &f->l, errmsg);

    if (rv != 0) {
        fail_msg("log_open: %d %s", rv, errmsg);
    }
}

static void fx_reopen(struct fx *f, int64_t now_ms)
{
    log_close(f->l);
    f->l = NULL;
    fx_open(f, now_ms);
}

/* Appends one standard batch (RECORDS records, timestamps ts..ts+2). */
static int64_t fx_append(struct fx *f, int64_t ts, int64_t now_ms)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct batch_builder b;
    int64_t end = log_end_offset(f->l);
    int64_t base = -1;
    int rv;

    batch_make(&b, RECORDS, VALUE, ts);
    assert_int_equal(b.buf.len, f->batch_bytes);
    rv = log_append(f->l, b.buf.data, b.buf.len, TERM, now_ms, &base, errmsg);
    if (rv != 0) {
        fail_msg("log_append: %d %s", rv, errmsg);
    }
    batch_builder_free(&b);
    assert_int_equal(base, end);
    assert_int_equal(log_end_offset(f->l), end + RECORDS);
    assert_true(f->n_batches < BATCHES_MAX);
    f->base[f->n_batches] = base;
    f->first_ts[f->n_batches] = ts;
    f->max_ts[f->n_batches] = ts + RECORDS - 1;
    f->n_batches++;
    return base;
}

static void fx_append_n(struct fx *f, uint32_t n, int64_t ts)
{
    for (uint32_t i = 0; i < n; i++) {
        fx_append(f, ts + 10 * (int64_t)i, 0);
    }
}

/* Forgets the recorded batches at or past offset (after a truncation). */
static void fx_forget_from(struct fx *f, int64_t offset)
{
    while (f->n_batches > 0 && f->base[f->n_batches - 1] >= offset) {
        f->n_batches--;
    }
}

static int64_t fx_first_ts_of(const struct fx *f, int64_t base)
{
    for (uint32_t i = 0; i < f->n_batches; i++) {
        if (f->base[i] == base) {
            return f->first_ts[i];
        }
    }
    fail_msg("no batch with base %lld", (long long)base);
    return -1;
}

/* Checks one batch returned by a read: CRC, term, offsets, records. */
static void check_batch(const struct fx *f, const uint8_t *p, size_t n,
                        int64_t base)
{
    struct batch_reader r;
    struct record_view rec;
    int64_t ts = fx_first_ts_of(f, base);

    batch_reader_init(&r);
    assert_int_equal(batch_reader_open(&r, p, n), 0);
    assert_int_equal(r.header.base_offset, base);
    assert_int_equal(r.header.term, TERM);
    assert_int_equal(r.header.record_count, RECORDS);
    for (int i = 0; i < RECORDS; i++) {
        assert_int_equal(batch_reader_next(&r, &rec), 1);
        assert_int_equal(rec.offset, base + i);
        assert_int_equal(rec.timestamp_ms, ts + i);
        assert_int_equal(rec.value_len, VALUE);
    }
    assert_int_equal(batch_reader_next(&r, &rec), 0);
    batch_reader_free(&r);
}

/* Reads the whole log sequentially and checks every batch. */
static void fx_verify(struct fx *f)
{
    int64_t offset = log_start_offset(f->l);
    int64_t end = log_end_offset(f->l);

    while (offset < end) {
        size_t n = 0;
        size_t pos = 0;
        assert_int_equal(
            log_read(f->l, offset, INT64_MAX, 3000, f->dst, READ_CAP, &n), 0);
        assert_true(n > 0);
        assert_true(n <= 3000 || n == f->batch_bytes);
        while (pos < n) {
            assert_int_equal(batch_bytes(f->dst + pos), f->batch_bytes);
            check_batch(f, f->dst + pos, n - pos, offset);
            offset += RECORDS;
            pos += f->batch_bytes;
        }
        assert_int_equal(pos, n);
    }
    assert_int_equal(offset, end);
}

/* Reads one batch at every offset, which goes through the index. */
static void fx_verify_random(struct fx *f)
{
    for (int64_t o = log_start_offset(f->l); o < log_end_offset(f->l); o++) {
        size_t n = 0;
        int64_t base = o - o % RECORDS;
        uint32_t bytes = 0;
        assert_int_equal(log_read(f->l, o, INT64_MAX, 1, f->dst, READ_CAP, &n),
                         0);
        assert_int_equal(n, f->batch_bytes);
        check_batch(f, f->dst, n, base);
        assert_int_equal(log_batch_bytes_at(f->l, o, &bytes), 0);
        assert_int_equal(bytes, f->batch_bytes);
    }
}

static void seg_path(const struct fx *f, char *path, size_t size, int64_t base,
                     const char *ext)
{
    snprintf(path, size, "%s/%020lld%s", f->dir, (long long)base, ext);
}

static int seg_exists(const struct fx *f, int64_t base, const char *ext)
{
    char path[256];
    struct stat st;

    seg_path(f, path, sizeof path, base, ext);
    return stat(path, &st) == 0;
}

static off_t seg_file_bytes(const struct fx *f, int64_t base, const char *ext)
{
    char path[256];
    struct stat st;

    seg_path(f, path, sizeof path, base, ext);
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void seg_cut(const struct fx *f, int64_t base, off_t size)
{
    char path[256];

    seg_path(f, path, sizeof path, base, ".log");
    assert_int_equal(truncate(path, size), 0);
}

static void file_patch(const char *path, off_t pos, const void *bytes, size_t n)
{
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, pos), (ssize_t)n);
    close(fd);
}

static void seg_flip(const struct fx *f, int64_t base, const char *ext,
                     off_t pos)
{
    char path[256];
    uint8_t c;
    int fd;

    seg_path(f, path, sizeof path, base, ext);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, pos), 1);
    c ^= 0x5a;
    assert_int_equal(pwrite(fd, &c, 1, pos), 1);
    close(fd);
}

/* Whole file into a malloc'd buffer; *n its length. */
static uint8_t *file_slurp(const char *path, size_t *n)
{
    struct stat st;
    uint8_t *p;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    assert_int_equal(pread(fd, p, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return p;
}

/* Sends stderr (where kappa_log writes) to a file until capture_end. */
static void capture_begin(struct fx *f)
{
    int fd;

    fflush(stderr);
    f->saved_stderr = dup(2);
    fd = open(f->capture_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr and returns what was logged (malloc'd, NUL-ended). */
static char *capture_end(struct fx *f)
{
    size_t n;
    char *s;

    fflush(stderr);
    dup2(f->saved_stderr, 2);
    close(f->saved_stderr);
    f->saved_stderr = -1;
    s = (char *)file_slurp(f->capture_path, &n);
    s[n] = '\0';
    fputs(s, stderr);
    return s;
}

static void assert_logged(const char *log, const char *fmt, ...)
{
    char want[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (strstr(log, want) == NULL) {
        fail_msg("log lacks \"%s\"", want);
    }
}

static void test_empty(void **state)
{
    struct fx *f = *state;
    size_t n = 1;
    int64_t offset = -1;

    fx_open(f, 0);
    assert_int_equal(log_start_offset(f->l), 0);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(log_flushed_offset(f->l), 0);
    assert_int_equal(log_segment_count(f->l), 1);
    assert_int_equal(log_size_bytes(f->l), 0);
    assert_true(seg_exists(f, 0, ".log"));
    assert_int_equal(log_read(f->l, 0, INT64_MAX, 100, f->dst, READ_CAP, &n),
                     0);
    assert_int_equal(n, 0);
    assert_int_equal(log_read(f->l, 1, INT64_MAX, 100, f->dst, READ_CAP, &n),
                     KAPPA_EOFFSET_RANGE);
    assert_int_equal(log_read(f->l, -1, INT64_MAX, 100, f->dst, READ_CAP, &n),
                     KAPPA_EOFFSET_RANGE);
    assert_int_equal(log_offset_for_timestamp(f->l, 0, &offset), 0);
    assert_int_equal(offset, 0);
    assert_int_equal(log_sync_now(f->l), 0);
    fx_reopen(f, 0);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(log_segment_count(f->l), 1);
}

static void test_round_trip_many_rolls(void **state)
{
    struct fx *f = *state;

    /* Three batches per segment: the fourth does not fit. */
    f->cfg.segment_bytes = 3 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 35, 1000);
    assert_int_equal(log_end_offset(f->l), 105);
    assert_int_equal(log_segment_count(f->l), 12);
    assert_int_equal(log_size_bytes(f->l), 35 * f->batch_bytes);
    for (int64_t base = 0; base < 105; base += 9) {
        assert_true(seg_exists(f, base, ".log"));
        assert_int_equal(seg_file_bytes(f, base, ".log"),
                         base == 99 ? 2 * f->batch_bytes : 3 * f->batch_bytes);
    }
    assert_true(seg_exists(f, 0, ".index"));
    assert_true(seg_exists(f, 0, ".timeindex"));
    fx_verify(f);
    fx_verify_random(f);
    fx_reopen(f, 0);
    assert_int_equal(log_start_offset(f->l), 0);
    assert_int_equal(log_end_offset(f->l), 105);
    assert_int_equal(log_flushed_offset(f->l), 105);
    assert_int_equal(log_segment_count(f->l), 12);
    fx_verify(f);
    fx_verify_random(f);
    assert_int_equal(fx_append(f, 5000, 0), 105);
    fx_verify(f);
}

static void test_roll_by_size(void **state)
{
    struct fx *f = *state;

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 10, 0);
    assert_int_equal(log_segment_count(f->l), 1);
    fx_append(f, 0, 0);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_true(seg_exists(f, 30, ".log"));
    assert_int_equal(seg_file_bytes(f, 0, ".log"), 10 * f->batch_bytes);
    assert_int_equal(seg_file_bytes(f, 30, ".log"), f->batch_bytes);
    /* Rolling fdatasynced the sealed segment. */
    assert_int_equal(log_flushed_offset(f->l), 30);
    fx_verify(f);
}

static void test_roll_by_age(void **state)
{
    struct fx *f = *state;
    uint32_t n_deleted = 9;

    f->cfg.segment_ms = 1000;
    fx_open(f, 0);
    fx_append(f, 0, 0);
    fx_append(f, 999, 999);
    assert_int_equal(log_segment_count(f->l), 1);
    fx_append(f, 1000, 1000);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_true(seg_exists(f, 6, ".log"));
    assert_int_equal(log_housekeep(f->l, 1999, &n_deleted), 0);
    assert_int_equal(n_deleted, 0);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_int_equal(log_housekeep(f->l, 2000, &n_deleted), 0);
    assert_int_equal(log_segment_count(f->l), 3);
    assert_true(seg_exists(f, 9, ".log"));
    assert_int_equal(log_flushed_offset(f->l), 9);
    /* An empty active segment never rolls. */
    assert_int_equal(log_housekeep(f->l, 9000, &n_deleted), 0);
    assert_int_equal(log_segment_count(f->l), 3);
    fx_append(f, 9000, 9000);
    assert_int_equal(log_segment_count(f->l), 3);
    /* After a restart the age counts from the first batch's max timestamp
     * (9002), capped at now. */
    fx_reopen(f, 9500);
    assert_int_equal(log_housekeep(f->l, 10001, &n_deleted), 0);
    assert_int_equal(log_segment_count(f->l), 3);
    assert_int_equal(log_housekeep(f->l, 10002, &n_deleted), 0);
    assert_int_equal(log_segment_count(f->l), 4);
    fx_verify(f);
}

static void test_retention_by_size(void **state)
{
    struct fx *f = *state;
    uint32_t n_deleted = 0;
    size_t n = 0;

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    f->cfg.retention_bytes = (int64_t)(25 * f->batch_bytes);
    f->cfg.retention_ms = -1;
    fx_open(f, 0);
    fx_append_n(f, 45, 0);
    assert_int_equal(log_segment_count(f->l), 5);
    assert_int_equal(log_housekeep(f->l, 0, &n_deleted), 0);
    /* 45 -> 35 -> 25 batches; dropping a third would leave 15 < 25. */
    assert_int_equal(n_deleted, 2);
    assert_int_equal(log_segment_count(f->l), 3);
    assert_int_equal(log_start_offset(f->l), 60);
    assert_int_equal(log_end_offset(f->l), 135);
    assert_int_equal(log_size_bytes(f->l), 25 * f->batch_bytes);
    assert_false(seg_exists(f, 0, ".log"));
    assert_false(seg_exists(f, 0, ".index"));
    assert_false(seg_exists(f, 30, ".log"));
    assert_true(seg_exists(f, 60, ".log"));
    assert_int_equal(log_read(f->l, 59, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     KAPPA_EOFFSET_RANGE);
    assert_int_equal(log_housekeep(f->l, 0, &n_deleted), 0);
    assert_int_equal(n_deleted, 0);
    fx_verify(f);
    fx_reopen(f, 0);
    assert_int_equal(log_start_offset(f->l), 60);
    fx_verify(f);
}

static void test_retention_by_age(void **state)
{
    struct fx *f = *state;
    uint32_t n_deleted = 0;
    size_t n = 1;

    f->cfg.segment_ms = 1000;
    f->cfg.retention_ms = 1500;
    fx_open(f, 0);
    fx_append(f, 0, 0);
    fx_append(f, 100, 100);
    fx_append(f, 1000, 1000); /* rolls: segment 6 */
    fx_append(f, 1100, 1100);
    fx_append(f, 2000, 2000); /* rolls: segment 12 */
    assert_int_equal(log_segment_count(f->l), 3);
    /* Segment 0's max timestamp is 102: kept while 102 >= now - 1500. */
    assert_int_equal(log_housekeep(f->l, 1602, &n_deleted), 0);
    assert_int_equal(n_deleted, 0);
    assert_int_equal(log_housekeep(f->l, 1603, &n_deleted), 0);
    assert_int_equal(n_deleted, 1);
    assert_int_equal(log_start_offset(f->l), 6);
    assert_false(seg_exists(f, 0, ".log"));
    /* Segment 6 expires, the active one never does. */
    assert_int_equal(log_housekeep(f->l, 2900, &n_deleted), 0);
    assert_int_equal(n_deleted, 1);
    assert_int_equal(log_segment_count(f->l), 1);
    assert_int_equal(log_start_offset(f->l), 12);
    assert_int_equal(log_end_offset(f->l), 15);
    /* Now the active one rolls by age and then expires: start == end. */
    assert_int_equal(log_housekeep(f->l, 3600, &n_deleted), 0);
    assert_int_equal(n_deleted, 1);
    assert_int_equal(log_segment_count(f->l), 1);
    assert_int_equal(log_start_offset(f->l), 15);
    assert_int_equal(log_end_offset(f->l), 15);
    assert_int_equal(log_size_bytes(f->l), 0);
    assert_int_equal(log_read(f->l, 15, INT64_MAX, 1, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(log_read(f->l, 14, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     KAPPA_EOFFSET_RANGE);
    fx_reopen(f, 3600);
    assert_int_equal(log_start_offset(f->l), 15);
    assert_int_equal(log_end_offset(f->l), 15);
    f->n_batches = 0;
    assert_int_equal(fx_append(f, 4000, 4000), 15);
    fx_verify(f);
}

static void test_truncate(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 35, 0);
    assert_int_equal(log_segment_count(f->l), 4);
    /* Not a batch boundary, or outside the log: nothing changes. */
    assert_int_equal(log_truncate(f->l, 52, errmsg), KAPPA_EINVAL);
    assert_int_equal(log_truncate(f->l, 106, errmsg), KAPPA_EINVAL);
    assert_int_equal(log_end_offset(f->l), 105);
    assert_int_equal(log_segment_count(f->l), 4);
    assert_int_equal(log_truncate(f->l, 105, errmsg), 0);
    assert_int_equal(log_end_offset(f->l), 105);

    /* Mid-segment, across two later segments. */
    assert_int_equal(log_truncate(f->l, 51, errmsg), 0);
    fx_forget_from(f, 51);
    assert_int_equal(log_end_offset(f->l), 51);
    assert_int_equal(log_flushed_offset(f->l), 51);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_int_equal(log_size_bytes(f->l), 17 * f->batch_bytes);
    assert_false(seg_exists(f, 60, ".log"));
    assert_false(seg_exists(f, 90, ".log"));
    assert_false(seg_exists(f, 30, ".index"));
    assert_int_equal(seg_file_bytes(f, 30, ".log"), 7 * f->batch_bytes);
    assert_int_equal(fx_append(f, 7000, 0), 51);
    fx_verify(f);
    /* Fill the truncated segment again until it rolls; its index must be
     * right after a reopen. */
    fx_append_n(f, 10, 8000);
    assert_int_equal(log_segment_count(f->l), 3);
    assert_true(seg_exists(f, 60, ".log"));
    fx_reopen(f, 0);
    fx_verify(f);
    fx_verify_random(f);

    /* At a segment's base: that segment becomes empty and active. */
    assert_int_equal(log_truncate(f->l, 30, errmsg), 0);
    fx_forget_from(f, 30);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_int_equal(log_end_offset(f->l), 30);
    assert_int_equal(seg_file_bytes(f, 30, ".log"), 0);
    assert_int_equal(fx_append(f, 9000, 0), 30);
    fx_verify(f);
    assert_int_equal(log_truncate(f->l, 0, errmsg), 0);
    f->n_batches = 0;
    assert_int_equal(log_segment_count(f->l), 1);
    assert_int_equal(log_start_offset(f->l), 0);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(log_size_bytes(f->l), 0);
    fx_reopen(f, 0);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(fx_append(f, 1, 0), 0);
}

static void test_torn_tail(void **state)
{
    struct fx *f = *state;
    off_t s;
    char *log;

    fx_open(f, 0);
    fx_append_n(f, 12, 0);
    log_close(f->l);
    f->l = NULL;
    s = (off_t)f->batch_bytes;
    seg_cut(f, 0, 12 * s - 5);
    capture_begin(f);
    fx_open(f, 0);
    log = capture_end(f);
    assert_logged(log, "%s/00000000000000000000.log at byte %lld of %lld",
                  f->dir, (long long)(11 * s), (long long)(12 * s - 5));
    free(log);
    fx_forget_from(f, 33);
    assert_int_equal(log_end_offset(f->l), 33);
    assert_int_equal(log_flushed_offset(f->l), 33);
    assert_int_equal(log_size_bytes(f->l), 11 * s);
    assert_int_equal(seg_file_bytes(f, 0, ".log"), 11 * s);
    fx_verify(f);
    assert_int_equal(fx_append(f, 500, 0), 33);

    /* A torn header, and zeros past the end (a preallocated tail). */
    log_close(f->l);
    f->l = NULL;
    seg_cut(f, 0, 10 * s + 10);
    fx_open(f, 0);
    fx_forget_from(f, 30);
    assert_int_equal(log_end_offset(f->l), 30);
    assert_int_equal(seg_file_bytes(f, 0, ".log"), 10 * s);
    log_close(f->l);
    f->l = NULL;
    seg_cut(f, 0, 10 * s + 4096);
    fx_open(f, 0);
    assert_int_equal(log_end_offset(f->l), 30);
    assert_int_equal(seg_file_bytes(f, 0, ".log"), 10 * s);
    fx_verify(f);
}

static void test_crc_corrupt_tail(void **state)
{
    struct fx *f = *state;
    off_t s;
    char *log;

    f->cfg.segment_bytes = 5 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 17, 0); /* segments 0, 15, 30, 45 (2 batches) */
    assert_int_equal(log_segment_count(f->l), 4);
    log_close(f->l);
    f->l = NULL;
    s = (off_t)f->batch_bytes;
    /* Flip a payload byte of the last segment's second batch. */
    seg_flip(f, 45, ".log", s + 100);
    capture_begin(f);
    fx_open(f, 0);
    log = capture_end(f);
    assert_logged(log,
                  "%s/00000000000000000045.log at byte %lld of %lld: "
                  "checksum mismatch",
                  f->dir, (long long)s, (long long)(2 * s));
    free(log);
    fx_forget_from(f, 48);
    assert_int_equal(log_end_offset(f->l), 48);
    assert_int_equal(seg_file_bytes(f, 45, ".log"), s);
    fx_verify(f);
    assert_int_equal(fx_append(f, 77, 0), 48);
    fx_verify(f);
}

static void test_sealed_corruption(void **state)
{
    struct fx *f = *state;
    off_t s;
    size_t n = 0;
    char *log;
    uint8_t garbage[KAPPA_BATCH_HEADER_BYTES];
    char path[256];

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 25, 0);
    log_close(f->l);
    f->l = NULL;
    s = (off_t)f->batch_bytes;
    /* Batch 4 (offsets 12..14) of sealed segment 0 gets a bad payload. */
    seg_flip(f, 0, ".log", 4 * s + 100);
    fx_open(f, 0);
    assert_int_equal(log_end_offset(f->l), 75);
    assert_int_equal(
        log_read(f->l, 30, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 10 * s);
    /* A read from 0 stops before the bad batch. */
    assert_int_equal(
        log_read(f->l, 0, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 4 * s);
    capture_begin(f);
    assert_int_equal(
        log_read(f->l, 13, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n),
        KAPPA_ECORRUPT);
    log = capture_end(f);
    assert_int_equal(n, 0);
    assert_logged(log, "%s/00000000000000000000.log at byte %lld", f->dir,
                  (long long)(4 * s));
    free(log);
    /* Batches after it still read. */
    assert_int_equal(log_read(f->l, 15, INT64_MAX, 1, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, s);

    /* A garbage header in batch 7 (offsets 21..23). */
    log_close(f->l);
    f->l = NULL;
    memset(garbage, 0xab, sizeof garbage);
    seg_path(f, path, sizeof path, 0, ".log");
    file_patch(path, 7 * s, garbage, sizeof garbage);
    fx_open(f, 0);
    capture_begin(f);
    assert_int_equal(log_read(f->l, 21, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     KAPPA_ECORRUPT);
    log = capture_end(f);
    assert_logged(log,
                  "%s/00000000000000000000.log at byte %lld: bad batch "
                  "header",
                  f->dir, (long long)(7 * s));
    free(log);
    assert_int_equal(log_read(f->l, 30, INT64_MAX, 1, f->dst, READ_CAP, &n), 0);

    /* Without index files the rebuild scan reports the first damage and
     * open still succeeds. */
    log_close(f->l);
    f->l = NULL;
    seg_path(f, path, sizeof path, 0, ".index");
    assert_int_equal(unlink(path), 0);
    capture_begin(f);
    fx_open(f, 0);
    log = capture_end(f);
    assert_logged(log,
                  "corruption in sealed segment "
                  "%s/00000000000000000000.log at byte %lld",
                  f->dir, (long long)(4 * s));
    free(log);
    assert_int_equal(log_end_offset(f->l), 75);
    assert_int_equal(
        log_read(f->l, 0, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 4 * s);
    assert_int_equal(log_read(f->l, 12, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     KAPPA_ECORRUPT);
    assert_int_equal(log_read(f->l, 27, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     KAPPA_ECORRUPT);
    for (int64_t o = 30; o < 75; o += 3) {
        assert_int_equal(log_read(f->l, o, INT64_MAX, 1, f->dst, READ_CAP, &n),
                         0);
        check_batch(f, f->dst, n, o);
    }
}

/* Reads a segment's index files. */
static void index_files_get(const struct fx *f, int64_t base, uint8_t **o,
                            size_t *no, uint8_t **t, size_t *nt)
{
    char path[256];

    seg_path(f, path, sizeof path, base, ".index");
    *o = file_slurp(path, no);
    seg_path(f, path, sizeof path, base, ".timeindex");
    *t = file_slurp(path, nt);
}

static void assert_index_files(const struct fx *f, int64_t base,
                               const uint8_t *o, size_t no, const uint8_t *t,
                               size_t nt)
{
    uint8_t *o2;
    uint8_t *t2;
    size_t no2;
    size_t nt2;

    index_files_get(f, base, &o2, &no2, &t2, &nt2);
    assert_int_equal(no2, no);
    assert_int_equal(nt2, nt);
    assert_memory_equal(o2, o, no);
    assert_memory_equal(t2, t, nt);
    free(o2);
    free(t2);
}

/* Earliest batch whose max timestamp is >= ts, by brute force. */
static int64_t expected_offset_for(const struct fx *f, int64_t ts)
{
    for (uint32_t i = 0; i < f->n_batches; i++) {
        if (f->max_ts[i] >= ts && f->base[i] >= log_start_offset(f->l)) {
            return f->base[i];
        }
    }
    return log_end_offset(f->l);
}

static void check_time_lookups(struct fx *f)
{
    for (int64_t ts = -10; ts < 1700; ts += 3) {
        int64_t offset = -1;
        assert_int_equal(log_offset_for_timestamp(f->l, ts, &offset), 0);
        if (offset != expected_offset_for(f, ts)) {
            fail_msg("timestamp %lld: offset %lld, want %lld", (long long)ts,
                     (long long)offset, (long long)expected_offset_for(f, ts));
        }
    }
}

/* Timestamps that go up and down, so the running maximum matters. */
static int64_t wobbly_ts(uint32_t i)
{
    return 100 + (int64_t)((i * 37) % 50) * 10 + (int64_t)i * 20;
}

static void test_index_rebuild(void **state)
{
    struct fx *f = *state;
    uint8_t *o[4];
    uint8_t *t[4];
    size_t no[4];
    size_t nt[4];
    char path[256];
    char *log;

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    /* An entry for every batch but the first of each segment. */
    f->cfg.index_interval_bytes = (uint32_t)f->batch_bytes;
    fx_open(f, 0);
    for (uint32_t i = 0; i < 45; i++) {
        fx_append(f, wobbly_ts(i), 0);
    }
    log_close(f->l);
    f->l = NULL;
    for (int k = 0; k < 4; k++) {
        index_files_get(f, 30 * k, &o[k], &no[k], &t[k], &nt[k]);
        assert_int_equal(no[k], 64 + 9 * 8);
        assert_int_equal(nt[k], 64 + 9 * 12);
    }
    seg_path(f, path, sizeof path, 0, ".index");
    assert_int_equal(unlink(path), 0);
    seg_path(f, path, sizeof path, 30, ".timeindex");
    file_patch(path, 0, "garbage garbage garbage", 23);
    seg_path(f, path, sizeof path, 60, ".index");
    assert_int_equal(truncate(path, 70), 0);
    /* An entry of segment 90's time index: only the entries CRC notices,
     * when the index is loaded by the first lookup. */
    seg_flip(f, 90, ".timeindex", 64 + 12 + 3);
    capture_begin(f);
    fx_open(f, 0);
    log = capture_end(f);
    assert_logged(log, "rebuilding index of %s/00000000000000000000.log",
                  f->dir);
    assert_logged(log, "rebuilding index of %s/00000000000000000030.log",
                  f->dir);
    assert_logged(log, "rebuilding index of %s/00000000000000000060.log",
                  f->dir);
    free(log);
    /* Rebuilt byte for byte. */
    for (int k = 0; k < 3; k++) {
        assert_index_files(f, 30 * k, o[k], no[k], t[k], nt[k]);
    }
    fx_verify_random(f);
    check_time_lookups(f);
    fx_verify(f);
    /* Segment 90's was rebuilt by the first lookup in it. */
    assert_index_files(f, 90, o[3], no[3], t[3], nt[3]);
    for (int k = 0; k < 4; k++) {
        free(o[k]);
        free(t[k]);
    }
}

static void test_offset_for_timestamp(void **state)
{
    struct fx *f = *state;
    int64_t offset = -1;

    f->cfg.segment_bytes = 8 * f->batch_bytes;
    f->cfg.index_interval_bytes = 700;
    fx_open(f, 0);
    for (uint32_t i = 0; i < 40; i++) {
        fx_append(f, wobbly_ts(i), 0);
    }
    check_time_lookups(f);
    assert_int_equal(log_offset_for_timestamp(f->l, INT64_MAX, &offset), 0);
    assert_int_equal(offset, 120);
    assert_int_equal(log_offset_for_timestamp(f->l, INT64_MIN, &offset), 0);
    assert_int_equal(offset, 0);
    fx_reopen(f, 0);
    check_time_lookups(f);
}

static void test_read_limits(void **state)
{
    struct fx *f = *state;
    uint32_t bytes = 0;
    size_t s;
    size_t n = 99;

    f->cfg.segment_bytes = 10 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 15, 0);
    s = f->batch_bytes;
    /* max_offset: batches whose base is below it. */
    assert_int_equal(log_read(f->l, 0, 7, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 3 * s);
    assert_int_equal(log_read(f->l, 0, 6, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 2 * s);
    assert_int_equal(log_read(f->l, 6, 6, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(log_read(f->l, 7, 6, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 0);
    /* max_bytes: whole batches only, but the first always. */
    assert_int_equal(
        log_read(f->l, 0, INT64_MAX, 2 * s + 10, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 2 * s);
    assert_int_equal(log_read(f->l, 0, INT64_MAX, 2 * s, f->dst, READ_CAP, &n),
                     0);
    assert_int_equal(n, 2 * s);
    assert_int_equal(log_read(f->l, 0, INT64_MAX, 1, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, s);
    assert_int_equal(log_read(f->l, 0, INT64_MAX, 0, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, s);
    /* dst_cap bounds everything; a first batch that does not fit is an
     * error, not an empty read. */
    assert_int_equal(
        log_read(f->l, 0, INT64_MAX, READ_CAP, f->dst, 2 * s + 5, &n), 0);
    assert_int_equal(n, 2 * s);
    assert_int_equal(log_read(f->l, 0, INT64_MAX, READ_CAP, f->dst, s, &n), 0);
    assert_int_equal(n, s);
    assert_int_equal(log_read(f->l, 0, INT64_MAX, READ_CAP, f->dst, s - 1, &n),
                     KAPPA_ETOOBIG);
    /* An offset inside a batch returns that whole batch. */
    assert_int_equal(log_read(f->l, 4, INT64_MAX, 1, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, s);
    check_batch(f, f->dst, n, 3);
    /* A read stops at the end of its segment. */
    assert_int_equal(
        log_read(f->l, 27, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, s);
    assert_int_equal(
        log_read(f->l, 30, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 5 * s);
    assert_int_equal(
        log_read(f->l, 46, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n),
        KAPPA_EOFFSET_RANGE);
    assert_int_equal(
        log_read(f->l, 45, INT64_MAX, READ_CAP, f->dst, READ_CAP, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(log_batch_bytes_at(f->l, 45, &bytes), KAPPA_EOFFSET_RANGE);
    assert_int_equal(log_batch_bytes_at(f->l, 44, &bytes), 0);
    assert_int_equal(bytes, s);
}

static void test_sync(void **state)
{
    struct fx *f = *state;
    struct log_sync s;
    char errmsg[KAPPA_ERRMSG_SIZE];

    f->cfg.segment_bytes = 4 * f->batch_bytes;
    fx_open(f, 0);
    assert_int_equal(log_sync_prepare(f->l, &s), 1);
    fx_append(f, 0, 0);
    assert_int_equal(log_flushed_offset(f->l), 0);
    assert_int_equal(log_sync_prepare(f->l, &s), 0);
    assert_int_equal(s.end_offset, 3);
    assert_true(s.fd >= 0);
    assert_int_equal(log_sync_prepare(f->l, &s), KAPPA_EBUSY);
    /* Appended after prepare: not covered by this sync. */
    fx_append(f, 0, 0);
    log_sync_execute(&s);
    assert_int_equal(s.rv, 0);
    log_sync_complete(f->l, &s);
    assert_int_equal(log_flushed_offset(f->l), 3);
    assert_int_equal(log_sync_now(f->l), 0);
    assert_int_equal(log_flushed_offset(f->l), 6);
    assert_int_equal(log_sync_prepare(f->l, &s), 1);

    /* A roll makes the sealed segment durable. */
    fx_append_n(f, 3, 0);
    assert_int_equal(log_segment_count(f->l), 2);
    assert_int_equal(log_flushed_offset(f->l), 12);
    assert_int_equal(log_end_offset(f->l), 15);

    /* A truncation during a sync: the sync may not cover the new bytes. */
    assert_int_equal(log_sync_prepare(f->l, &s), 0);
    assert_int_equal(s.end_offset, 15);
    assert_int_equal(log_truncate(f->l, 9, errmsg), 0);
    fx_forget_from(f, 9);
    assert_int_equal(log_flushed_offset(f->l), 9);
    fx_append(f, 0, 0);
    assert_int_equal(log_end_offset(f->l), 12);
    log_sync_execute(&s);
    log_sync_complete(f->l, &s);
    assert_int_equal(log_flushed_offset(f->l), 9);
    assert_int_equal(log_sync_now(f->l), 0);
    assert_int_equal(log_flushed_offset(f->l), 12);
    fx_verify(f);
}

static void test_bad_appends(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct batch_builder b;
    int64_t base = -1;

    fx_open(f, 0);
    batch_make(&b, RECORDS, VALUE, 0);
    assert_int_equal(log_append(f->l, b.buf.data, 0, 1, 0, &base, errmsg),
                     KAPPA_EINVAL);
    assert_int_equal(
        log_append(f->l, b.buf.data, b.buf.len - 1, 1, 0, &base, errmsg),
        KAPPA_EINVAL);
    b.buf.data[24] = 9; /* magic */
    assert_int_equal(
        log_append(f->l, b.buf.data, b.buf.len, 1, 0, &base, errmsg),
        KAPPA_EINVAL);
    batch_builder_free(&b);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(log_size_bytes(f->l), 0);
    /* Several batches in one append get consecutive offsets. */
    {
        struct batch_builder b2;
        uint8_t *two;
        batch_make(&b, RECORDS, VALUE, 10);
        batch_make(&b2, RECORDS, VALUE, 20);
        two = malloc(b.buf.len + b2.buf.len);
        memcpy(two, b.buf.data, b.buf.len);
        memcpy(two + b.buf.len, b2.buf.data, b2.buf.len);
        assert_int_equal(log_append(f->l, two, b.buf.len + b2.buf.len, TERM, 0,
                                    &base, errmsg),
                         0);
        assert_int_equal(base, 0);
        assert_int_equal(batch_base_offset(two + b.buf.len), 3);
        f->base[0] = 0;
        f->first_ts[0] = 10;
        f->base[1] = 3;
        f->first_ts[1] = 20;
        f->n_batches = 2;
        free(two);
        batch_builder_free(&b);
        batch_builder_free(&b2);
    }
    assert_int_equal(log_end_offset(f->l), 6);
    fx_verify(f);
}

static void test_open_oom(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    char path[256];
    int rv = KAPPA_ENOMEM;

    f->cfg.segment_bytes = 4 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 14, 0);
    log_close(f->l);
    f->l = NULL;
    seg_path(f, path, sizeof path, 12, ".index");
    assert_int_equal(unlink(path), 0);
    for (long i = 1; rv == KAPPA_ENOMEM; i++) {
        assert_true(i < 1000);
        kappa_alloc_fail_after(i);
        rv = log_open(f->dir, &f->cfg, 0, &f->l, errmsg);
        kappa_alloc_fail_after(0);
        assert_true(rv == 0 || rv == KAPPA_ENOMEM);
    }
    assert_int_equal(log_end_offset(f->l), 42);
    fx_verify(f);
}

static void test_destroy(void **state)
{
    struct fx *f = *state;
    struct stat st;

    f->cfg.segment_bytes = 2 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 5, 0);
    assert_int_equal(log_destroy(f->l), 0);
    f->l = NULL;
    assert_int_equal(stat(f->dir, &st), -1);
}

/* A standard batch numbered base with the given term, as a replica gets
 * it (log_append_exact). Returns its bytes (malloc'd, f->batch_bytes). */
static uint8_t *numbered_batch(struct fx *f, int64_t base, uint64_t term,
                               int64_t ts)
{
    struct batch_builder b;
    uint8_t *p = malloc(f->batch_bytes);

    assert_non_null(p);
    batch_make(&b, RECORDS, VALUE, ts);
    assert_int_equal(b.buf.len, f->batch_bytes);
    batch_set_base_offset(b.buf.data, base);
    batch_set_term(b.buf.data, term);
    memcpy(p, b.buf.data, b.buf.len);
    batch_builder_free(&b);
    return p;
}

static uint64_t term_at(struct fx *f, int64_t offset)
{
    size_t n = 0;
    struct batch_header h;

    assert_int_equal(log_read(f->l, offset, INT64_MAX, 1, f->dst, READ_CAP, &n),
                     0);
    assert_int_equal(batch_header_decode(f->dst, n, &h), 0);
    assert_int_equal(h.base_offset, offset);
    return h.term;
}

static void test_append_exact(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    size_t bb = f->batch_bytes;
    uint8_t *three = malloc(3 * bb);
    uint8_t *p;

    f->cfg.segment_bytes = 4 * bb;
    fx_open(f, 0);
    /* Wrong first offset, a gap, a bad CRC: refused, nothing written. */
    p = numbered_batch(f, 3, 1, 0);
    assert_int_equal(log_append_exact(f->l, p, bb, 0, errmsg), KAPPA_EINVAL);
    assert_non_null(strstr(errmsg, "want 0"));
    free(p);
    p = numbered_batch(f, 0, 1, 0);
    memcpy(three, p, bb);
    free(p);
    p = numbered_batch(f, 4, 1, 10);
    memcpy(three + bb, p, bb);
    free(p);
    assert_int_equal(log_append_exact(f->l, three, 2 * bb, 0, errmsg),
                     KAPPA_EINVAL);
    three[bb - 1] ^= 1;
    assert_int_equal(log_append_exact(f->l, three, bb, 0, errmsg),
                     KAPPA_EINVAL);
    three[bb - 1] ^= 1;
    assert_int_equal(log_append_exact(f->l, three, 0, 0, errmsg), KAPPA_EINVAL);
    assert_int_equal(log_end_offset(f->l), 0);
    assert_int_equal(log_size_bytes(f->l), 0);

    /* Three batches of terms 1, 1, 2 in one call: terms kept, offsets as
     * given, nothing renumbered. */
    for (int i = 0; i < 3; i++) {
        p = numbered_batch(f, 3 * i, i < 2 ? 1 : 2, 10 * i);
        memcpy(three + (size_t)i * bb, p, bb);
        free(p);
        f->base[i] = 3 * i;
        f->first_ts[i] = 10 * i;
    }
    f->n_batches = 3;
    assert_int_equal(log_append_exact(f->l, three, 3 * bb, 0, errmsg), 0);
    assert_int_equal(log_end_offset(f->l), 9);
    assert_int_equal(term_at(f, 0), 1);
    assert_int_equal(term_at(f, 3), 1);
    assert_int_equal(term_at(f, 6), 2);
    /* The next one must continue at 9; a roll happens on the way. */
    p = numbered_batch(f, 9, 2, 30);
    assert_int_equal(log_append_exact(f->l, p, bb, 0, errmsg), 0);
    assert_int_equal(log_segment_count(f->l), 1);
    free(p);
    p = numbered_batch(f, 12, 3, 40);
    assert_int_equal(log_append_exact(f->l, p, bb, 0, errmsg), 0);
    assert_int_equal(log_segment_count(f->l), 2);
    free(p);
    free(three);
    assert_int_equal(term_at(f, 12), 3);
    fx_reopen(f, 0);
    assert_int_equal(log_end_offset(f->l), 15);
    assert_int_equal(term_at(f, 9), 2);
    assert_int_equal(term_at(f, 12), 3);
}

static void test_reset(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct log_sync s;
    uint8_t *p;

    f->cfg.segment_bytes = 2 * f->batch_bytes;
    fx_open(f, 0);
    fx_append_n(f, 5, 0);
    assert_int_equal(log_segment_count(f->l), 3);
    assert_int_equal(log_reset(f->l, -1, errmsg), KAPPA_EINVAL);
    /* A sync in flight across the reset completes without advancing. */
    fx_append(f, 0, 0);
    assert_int_equal(log_sync_prepare(f->l, &s), 0);
    assert_int_equal(log_reset(f->l, 1000, errmsg), 0);
    assert_int_equal(log_start_offset(f->l), 1000);
    assert_int_equal(log_end_offset(f->l), 1000);
    assert_int_equal(log_flushed_offset(f->l), 1000);
    assert_int_equal(log_segment_count(f->l), 1);
    assert_int_equal(log_size_bytes(f->l), 0);
    assert_false(seg_exists(f, 0, ".log"));
    p = numbered_batch(f, 1000, 4, 0);
    assert_int_equal(log_append_exact(f->l, p, f->batch_bytes, 0, errmsg), 0);
    free(p);
    log_sync_execute(&s);
    log_sync_complete(f->l, &s);
    assert_int_equal(log_flushed_offset(f->l), 1000);
    assert_int_equal(log_sync_now(f->l), 0);
    assert_int_equal(log_flushed_offset(f->l), 1003);
    /* Plain appends continue from there, and it survives a reopen. */
    f->n_batches = 0;
    f->base[0] = 1000;
    f->first_ts[0] = 0;
    f->n_batches = 1;
    fx_append(f, 50, 0);
    fx_reopen(f, 0);
    assert_int_equal(log_start_offset(f->l), 1000);
    assert_int_equal(log_end_offset(f->l), 1006);
    assert_int_equal(term_at(f, 1000), 4);
    assert_int_equal(term_at(f, 1003), TERM);
    /* Reset to a lower offset works too (an empty log at 0). */
    assert_int_equal(log_reset(f->l, 0, errmsg), 0);
    fx_reopen(f, 0);
    assert_int_equal(log_start_offset(f->l), 0);
    assert_int_equal(log_end_offset(f->l), 0);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_empty),
        T(test_round_trip_many_rolls),
        T(test_roll_by_size),
        T(test_roll_by_age),
        T(test_retention_by_size),
        T(test_retention_by_age),
        T(test_truncate),
        T(test_torn_tail),
        T(test_crc_corrupt_tail),
        T(test_sealed_corruption),
        T(test_index_rebuild),
        T(test_offset_for_timestamp),
        T(test_read_limits),
        T(test_sync),
        T(test_bad_appends),
        T(test_append_exact),
        T(test_reset),
        T(test_open_oom),
        T(test_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
