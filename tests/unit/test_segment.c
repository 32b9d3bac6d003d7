/* Unit tests for broker/store/segment: names, append and lookups, the
 * recovery scan (including batches larger than its buffer), sealed
 * segments and their index files, truncation, and a failed write. */
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/store/segment.h"
#include "common/alloc.h"
#include "common/batch.h"
#include "common/err.h"

#define BASE 100

struct fx {
    char path[64];
    struct store_dir dir;
    struct segment *seg;
    /* The batches appended: position, base, bytes, max timestamp. */
    uint64_t pos[64];
    int64_t base[64];
    uint32_t bytes[64];
    int64_t max_ts[64];
    uint32_t n;
};

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

    assert_non_null(f);
    strcpy(f->path, "/tmp/kappa-test-segment-XXXXXX");
    assert_non_null(mkdtemp(f->path));
    f->dir.fd = open(f->path, O_RDONLY | O_DIRECTORY);
    assert_true(f->dir.fd >= 0);
    f->dir.path = f->path;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    segment_free(f->seg);
    close(f->dir.fd);
    nftw(f->path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void batch_make(struct batch_builder *b, uint32_t n_records,
                       uint32_t value_bytes, int64_t ts)
{
    uint8_t *value = calloc(1, value_bytes + 1);

    assert_non_null(value);
    for (uint32_t i = 0; i < value_bytes; i++) {
        value[i] = (uint8_t)(i ^ (uint32_t)ts);
    }
    batch_builder_init(b);
    for (uint32_t i = 0; i < n_records; i++) {
        assert_int_equal(
            batch_builder_add(b, NULL, 0, value, value_bytes, NULL, 0, ts - i),
            0);
    }
    assert_int_equal(
        batch_builder_finish(b, KAPPA_COMPRESSION_NONE, -1, -1, -1), 0);
    free(value);
}

/* Appends one batch and records where it went. */
static void append(struct fx *f, uint32_t n_records, uint32_t value_bytes,
                   int64_t ts)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct batch_builder b;
    uint64_t size = f->seg->size_bytes;
    int64_t next = f->seg->next_offset;

    batch_make(&b, n_records, value_bytes, ts);
    assert_int_equal(
        segment_append(f->seg, b.buf.data, b.buf.len, 1, 3, errmsg), 0);
    assert_int_equal(f->seg->size_bytes, size + b.buf.len);
    assert_int_equal(f->seg->next_offset, next + n_records);
    f->pos[f->n] = size;
    f->base[f->n] = next;
    f->bytes[f->n] = (uint32_t)b.buf.len;
    f->max_ts[f->n] = ts; /* records go back in time from ts */
    f->n++;
    batch_builder_free(&b);
}

static void create(struct fx *f, uint32_t interval)
{
    char errmsg[KAPPA_ERRMSG_SIZE];

    assert_int_equal(segment_create(&f->dir, BASE, interval, &f->seg, errmsg),
                     0);
}

static void recover(struct fx *f, uint32_t interval)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    int rv;

    segment_free(f->seg);
    f->seg = NULL;
    rv = segment_recover(&f->dir, BASE, interval, 1000000, &f->seg, errmsg);
    if (rv != 0) {
        fail_msg("recover: %d %s", rv, errmsg);
    }
}

static off_t file_bytes(const struct fx *f, const char *name)
{
    struct stat st;

    assert_int_equal(fstatat(f->dir.fd, name, &st, 0), 0);
    return st.st_size;
}

static void flip(const struct fx *f, off_t pos)
{
    char name[SEGMENT_NAME_SIZE];
    uint8_t c;
    int fd;

    segment_name(name, BASE, SEGMENT_EXT_LOG);
    fd = openat(f->dir.fd, name, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &c, 1, pos), 1);
    c ^= 0x80;
    assert_int_equal(pwrite(fd, &c, 1, pos), 1);
    close(fd);
}

static void test_names(void **state)
{
    char name[SEGMENT_NAME_SIZE];
    int64_t base = -1;
    enum segment_ext ext = SEGMENT_EXT_LOG;
    static const char *const bad[] = {
        "0000000000000000000.log",        "00000000000000000000.lo",
        "99999999999999999999.log",       "0000000000000000000a.log",
        "00000000000000000000.log.tmp",   "00000000000000000000",
        "-0000000000000000001.log",       "x",
        "00000000000000000000.index.old", "",
    };

    (void)state;
    segment_name(name, 0, SEGMENT_EXT_LOG);
    assert_string_equal(name, "00000000000000000000.log");
    segment_name(name, 12345, SEGMENT_EXT_INDEX);
    assert_string_equal(name, "00000000000000012345.index");
    segment_name(name, INT64_MAX, SEGMENT_EXT_TIMEINDEX);
    assert_string_equal(name, "09223372036854775807.timeindex");
    assert_int_equal(segment_name_parse(name, &base, &ext), 0);
    assert_int_equal(base, INT64_MAX);
    assert_int_equal(ext, SEGMENT_EXT_TIMEINDEX);
    assert_int_equal(
        segment_name_parse("00000000000000000042.log", &base, &ext), 0);
    assert_int_equal(base, 42);
    assert_int_equal(ext, SEGMENT_EXT_LOG);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (segment_name_parse(bad[i], &base, &ext) != -1) {
            fail_msg("accepted \"%s\"", bad[i]);
        }
    }
}

static void test_append_find_read(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct segment *dup = NULL;
    struct batch_header h;
    uint8_t dst[8192];
    uint64_t pos;
    size_t n;

    /* Interval 0: an entry for every batch, position 0 included. */
    create(f, 0);
    assert_int_equal(segment_create(&f->dir, BASE, 0, &dup, errmsg), KAPPA_EIO);
    for (uint32_t i = 1; i <= 5; i++) {
        append(f, i, 50, 1000 + i);
    }
    assert_int_equal(f->seg->next_offset, BASE + 15);
    assert_int_equal(f->seg->idx.n_entries, 5);
    assert_int_equal(f->seg->max_timestamp_ms, 1005);
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(f->seg->idx.entries[i].position, f->pos[i]);
        assert_int_equal(f->seg->idx.entries[i].rel_offset, f->base[i] - BASE);
    }
    for (int64_t o = BASE; o < BASE + 15; o++) {
        uint32_t k = 0;
        while (k + 1 < f->n && f->base[k + 1] <= o) {
            k++;
        }
        assert_int_equal(segment_find(f->seg, o, &pos, &h), 0);
        assert_int_equal(pos, f->pos[k]);
        assert_int_equal(h.base_offset, f->base[k]);
        assert_int_equal(h.term, 3);
    }
    /* From offset 102 (batch 1): batches 1 and 2 fit in max_bytes. */
    assert_int_equal(segment_read(f->seg, 102, INT64_MAX,
                                  f->bytes[1] + f->bytes[2], dst, sizeof dst,
                                  &n),
                     0);
    assert_int_equal(n, f->bytes[1] + f->bytes[2]);
    assert_int_equal(batch_base_offset(dst), 101);
    assert_int_equal(f->seg->hint_offset, 106);
    assert_int_equal(f->seg->hint_position, f->pos[3]);
    /* max_offset 110 stops before batch 4 (base 110). */
    assert_int_equal(
        segment_read(f->seg, 106, 110, sizeof dst, dst, sizeof dst, &n), 0);
    assert_int_equal(n, f->bytes[3]);
    assert_int_equal(segment_read(f->seg, 110, INT64_MAX, 0, dst, 10, &n),
                     KAPPA_ETOOBIG);
}

static void test_recover_rebuilds_same_index(void **state)
{
    struct fx *f = *state;
    struct index_entry saved[64];
    uint32_t n_saved;

    create(f, 300);
    for (uint32_t i = 0; i < 30; i++) {
        append(f, 1 + i % 4, 40 + 13 * i, 5000 - 7 * (int64_t)(i % 5));
    }
    n_saved = f->seg->idx.n_entries;
    assert_true(n_saved > 5);
    memcpy(saved, f->seg->idx.entries, n_saved * sizeof saved[0]);
    recover(f, 300);
    assert_int_equal(f->seg->next_offset, f->base[29] + 1 + 29 % 4);
    assert_int_equal(f->seg->size_bytes, f->pos[29] + f->bytes[29]);
    assert_int_equal(f->seg->idx.n_entries, n_saved);
    assert_memory_equal(f->seg->idx.entries, saved, n_saved * sizeof saved[0]);
    assert_int_equal(f->seg->max_timestamp_ms, 5000);
    assert_int_equal(f->seg->last_index_position, saved[n_saved - 1].position);
    /* The age roll counts from the first batch's max timestamp. */
    assert_int_equal(f->seg->roll_base_ms, 5000);
}

static void test_recover_big_batches(void **state)
{
    struct fx *f = *state;
    char name[SEGMENT_NAME_SIZE];

    segment_name(name, BASE, SEGMENT_EXT_LOG);
    create(f, 4096);
    append(f, 2, 10, 1);
    append(f, 1, 3 * SEGMENT_SCAN_BUFFER_BYTES / 2, 2);
    append(f, 1, 700 * 1024, 3);
    append(f, 2, 10, 4);
    recover(f, 4096);
    assert_int_equal(f->seg->next_offset, BASE + 6);
    assert_int_equal(f->seg->size_bytes, f->pos[3] + f->bytes[3]);
    /* A flipped byte deep inside the third batch, past the first window
     * of the scan: the file is cut before that batch. */
    flip(f, (off_t)(f->pos[2] + f->bytes[2] - 10));
    recover(f, 4096);
    assert_int_equal(f->seg->next_offset, BASE + 3);
    assert_int_equal(f->seg->size_bytes, f->pos[2]);
    assert_int_equal(file_bytes(f, name), f->pos[2]);
}

static void test_recover_offset_gap(void **state)
{
    struct fx *f = *state;
    char name[SEGMENT_NAME_SIZE];
    int fd;
    uint8_t off[8] = {50};

    segment_name(name, BASE, SEGMENT_EXT_LOG);
    create(f, 4096);
    append(f, 2, 10, 1);
    append(f, 2, 10, 2);
    append(f, 2, 10, 3);
    /* The third batch claims base offset 50: outside the CRC, so only the
     * contiguity check notices. */
    fd = openat(f->dir.fd, name, O_RDWR);
    assert_int_equal(pwrite(fd, off, 8, (off_t)f->pos[2]), 8);
    close(fd);
    recover(f, 4096);
    assert_int_equal(f->seg->next_offset, BASE + 4);
    assert_int_equal(file_bytes(f, name), f->pos[2]);
    /* A segment whose first batch has the wrong base is emptied. */
    fd = openat(f->dir.fd, name, O_RDWR);
    assert_int_equal(pwrite(fd, off, 8, 0), 8);
    close(fd);
    recover(f, 4096);
    assert_int_equal(f->seg->next_offset, BASE);
    assert_int_equal(f->seg->size_bytes, 0);
    assert_int_equal(f->seg->max_timestamp_ms, INT64_MIN);
    assert_int_equal(f->seg->roll_base_ms, INT64_MIN);
}

static void test_sealed(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    char iname[SEGMENT_NAME_SIZE];
    struct index_entry saved[64];
    uint32_t n_saved;
    int64_t offset = -1;

    segment_name(iname, BASE, SEGMENT_EXT_INDEX);
    create(f, 200);
    for (uint32_t i = 0; i < 20; i++) {
        append(f, 2, 60, 100 * (int64_t)(i + 1));
    }
    assert_int_equal(segment_seal(f->seg, errmsg), 0);
    assert_false(f->seg->is_active);
    n_saved = f->seg->idx.n_entries;
    memcpy(saved, f->seg->idx.entries, n_saved * sizeof saved[0]);
    assert_int_equal(file_bytes(f, iname), 64 + 8 * n_saved);
    segment_free(f->seg);
    f->seg = NULL;

    /* Opened from the index headers alone, loaded on demand. */
    assert_int_equal(segment_open_sealed(&f->dir, BASE, 200, &f->seg, errmsg),
                     0);
    assert_false(f->seg->is_loaded);
    assert_int_equal(f->seg->fd, -1);
    assert_int_equal(f->seg->size_bytes, f->pos[19] + f->bytes[19]);
    assert_int_equal(f->seg->max_timestamp_ms, 2000);
    assert_int_equal(segment_load(f->seg, errmsg), 0);
    assert_int_equal(f->seg->idx.n_entries, n_saved);
    assert_memory_equal(f->seg->idx.entries, saved, n_saved * sizeof saved[0]);
    assert_int_equal(segment_offset_for_timestamp(f->seg, 1050, &offset), 0);
    assert_int_equal(offset, BASE + 20);
    assert_int_equal(segment_offset_for_timestamp(f->seg, 2001, &offset), 1);
    segment_unload(f->seg);
    assert_false(f->seg->is_loaded);
    segment_free(f->seg);
    f->seg = NULL;

    /* Without the index: scanned and rewritten at open. */
    assert_int_equal(unlinkat(f->dir.fd, iname, 0), 0);
    assert_int_equal(segment_open_sealed(&f->dir, BASE, 200, &f->seg, errmsg),
                     0);
    assert_true(f->seg->is_loaded);
    assert_int_equal(f->seg->idx.n_entries, n_saved);
    assert_memory_equal(f->seg->idx.entries, saved, n_saved * sizeof saved[0]);
    assert_int_equal(file_bytes(f, iname), 64 + 8 * n_saved);
}

static void test_truncate(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    char name[SEGMENT_NAME_SIZE];
    uint64_t pos;

    segment_name(name, BASE, SEGMENT_EXT_LOG);
    create(f, 100);
    append(f, 2, 60, 500);
    append(f, 2, 60, 900); /* the max stays in the kept part */
    append(f, 2, 60, 700);
    append(f, 2, 60, 950);
    append(f, 2, 60, 400);
    assert_int_equal(segment_boundary(f->seg, BASE + 3, &pos), KAPPA_EINVAL);
    assert_int_equal(segment_truncate(f->seg, BASE + 3, errmsg), KAPPA_EINVAL);
    assert_int_equal(f->seg->next_offset, BASE + 10);
    assert_int_equal(segment_truncate(f->seg, BASE + 6, errmsg), 0);
    assert_int_equal(f->seg->next_offset, BASE + 6);
    assert_int_equal(f->seg->size_bytes, f->pos[3]);
    assert_int_equal(file_bytes(f, name), f->pos[3]);
    assert_int_equal(f->seg->max_timestamp_ms, 900);
    for (uint32_t i = 0; i < f->seg->idx.n_entries; i++) {
        assert_true(f->seg->idx.entries[i].position < f->pos[3]);
    }
    assert_int_equal(f->seg->last_index_position, f->pos[2]);
    f->n = 3;
    append(f, 1, 60, 100);
    recover(f, 100);
    assert_int_equal(f->seg->next_offset, BASE + 7);
    assert_int_equal(f->seg->max_timestamp_ms, 900);
    assert_int_equal(segment_truncate(f->seg, BASE, errmsg), 0);
    assert_int_equal(f->seg->size_bytes, 0);
    assert_int_equal(f->seg->idx.n_entries, 0);
    assert_int_equal(f->seg->max_timestamp_ms, INT64_MIN);
}

/* A write that fails half-way (file size limit) leaves nothing behind. */
static void test_failed_append(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    char name[SEGMENT_NAME_SIZE];
    struct batch_builder b;
    struct rlimit old;
    struct rlimit lim;
    uint64_t size;

    segment_name(name, BASE, SEGMENT_EXT_LOG);
    create(f, 100);
    append(f, 2, 60, 1);
    size = f->seg->size_bytes;
    batch_make(&b, 3, 5000, 2);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = size + 1000;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    assert_int_not_equal(
        segment_append(f->seg, b.buf.data, b.buf.len, 1, 3, errmsg), 0);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_false(f->seg->is_failed);
    assert_int_equal(f->seg->size_bytes, size);
    assert_int_equal(f->seg->next_offset, BASE + 2);
    assert_int_equal(file_bytes(f, name), size);
    assert_int_equal(
        segment_append(f->seg, b.buf.data, b.buf.len, 1, 3, errmsg), 0);
    assert_int_equal(f->seg->next_offset, BASE + 5);
    batch_builder_free(&b);
    recover(f, 100);
    assert_int_equal(f->seg->next_offset, BASE + 5);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_names),
        T(test_append_find_read),
        T(test_recover_rebuilds_same_index),
        T(test_recover_big_batches),
        T(test_recover_offset_gap),
        T(test_sealed),
        T(test_truncate),
        T(test_failed_append),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
