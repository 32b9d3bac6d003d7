/* Unit tests for broker/store/index: lookups, truncation, the two file
 * formats byte by byte, and every kind of damage the loader must notice. */
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

#include "broker/store/index.h"
#include "common/alloc.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/err.h"

#define ONAME     "00000000000000000500.index"
#define TNAME     "00000000000000000500.timeindex"
#define BASE      500
#define SEG_BYTES 100000

struct fx {
    char dir[64];
    int dir_fd;
    struct index idx;
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
    strcpy(f->dir, "/tmp/kappa-test-index-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->dir_fd = open(f->dir, O_RDONLY | O_DIRECTORY);
    assert_true(f->dir_fd >= 0);
    index_init(&f->idx);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    index_free(&f->idx);
    close(f->dir_fd);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void add(struct index *idx, uint32_t rel, uint32_t pos, int64_t ts)
{
    assert_int_equal(index_reserve(idx, 1), 0);
    index_add(idx, rel, pos, ts);
}

/* Four entries: (rel, pos, ts) = (3,100,10) (7,250,10) (12,400,30)
 * (20,700,35). */
static void add_four(struct index *idx)
{
    add(idx, 3, 100, 10);
    add(idx, 7, 250, 10);
    add(idx, 12, 400, 30);
    add(idx, 20, 700, 35);
}

static int entry_number(const struct index *idx, const struct index_entry *e)
{
    return e == NULL ? -1 : (int)(e - idx->entries);
}

static void test_lookup_offset(void **state)
{
    struct fx *f = *state;
    static const struct {
        uint32_t rel;
        int want;
    } cases[] = {{0, -1}, {2, -1}, {3, 0},  {6, 0},  {7, 1},
                 {11, 1}, {12, 2}, {19, 2}, {20, 3}, {UINT32_MAX, 3}};

    assert_null(index_lookup_offset(&f->idx, 5));
    add_four(&f->idx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct index_entry *e =
            index_lookup_offset(&f->idx, cases[i].rel);
        if (entry_number(&f->idx, e) != cases[i].want) {
            fail_msg("rel %u: entry %d, want %d", cases[i].rel,
                     entry_number(&f->idx, e), cases[i].want);
        }
    }
}

static void test_lookup_time(void **state)
{
    struct fx *f = *state;
    static const struct {
        int64_t ts;
        int want;
    } cases[] = {{INT64_MIN, -1}, {10, -1}, {11, 1}, {30, 1},
                 {31, 2},         {35, 2},  {36, 3}, {INT64_MAX, 3}};

    add_four(&f->idx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct index_entry *e = index_lookup_time(&f->idx, cases[i].ts);
        if (entry_number(&f->idx, e) != cases[i].want) {
            fail_msg("ts %lld: entry %d, want %d", (long long)cases[i].ts,
                     entry_number(&f->idx, e), cases[i].want);
        }
    }
    assert_ptr_equal(index_next(&f->idx, &f->idx.entries[0]),
                     &f->idx.entries[1]);
    assert_null(index_next(&f->idx, &f->idx.entries[3]));
}

static void test_truncate_and_grow(void **state)
{
    struct fx *f = *state;

    add_four(&f->idx);
    index_truncate(&f->idx, 701);
    assert_int_equal(f->idx.n_entries, 4);
    index_truncate(&f->idx, 400);
    assert_int_equal(f->idx.n_entries, 2);
    assert_int_equal(f->idx.entries[1].position, 250);
    index_truncate(&f->idx, 0);
    assert_int_equal(f->idx.n_entries, 0);
    for (uint32_t i = 0; i < 5000; i++) {
        add(&f->idx, i, i * 64, i);
    }
    assert_int_equal(f->idx.n_entries, 5000);
    assert_true(f->idx.cap_entries >= 5000);
    assert_int_equal(index_lookup_offset(&f->idx, 4321)->position, 4321 * 64);
}

/* The segment length write_files records. */
static uint64_t meta_segment_bytes = SEG_BYTES;

static void meta_of(const struct index *idx, struct index_meta *meta)
{
    meta->base_offset = BASE;
    meta->segment_bytes = meta_segment_bytes;
    meta->max_timestamp_ms = 99;
    meta->n_entries = idx->n_entries;
}

static void write_files(struct fx *f, const struct index *idx)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct index_meta meta;

    meta_of(idx, &meta);
    assert_int_equal(index_write(idx, &meta, f->dir_fd, ONAME, TNAME, errmsg),
                     0);
}

static uint8_t *slurp(struct fx *f, const char *name, size_t *n)
{
    struct stat st;
    uint8_t *p;
    int fd = openat(f->dir_fd, name, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    p = malloc((size_t)st.st_size + 1);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return p;
}

static void spit(struct fx *f, const char *name, const uint8_t *p, size_t n)
{
    int fd = openat(f->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static int load(struct fx *f, int64_t base, uint64_t seg_bytes,
                struct index *out)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct index_meta meta;

    index_init(out);
    return index_load(out, f->dir_fd, ONAME, TNAME, base, seg_bytes, &meta,
                      errmsg);
}

static void test_file_format(void **state)
{
    struct fx *f = *state;
    uint8_t *o;
    uint8_t *t;
    size_t no;
    size_t nt;

    add_four(&f->idx);
    write_files(f, &f->idx);
    o = slurp(f, ONAME, &no);
    t = slurp(f, TNAME, &nt);
    assert_int_equal(no, 64 + 4 * 8);
    assert_int_equal(nt, 64 + 4 * 12);
    assert_memory_equal(o, "KPOFFIDX", 8);
    assert_memory_equal(t, "KPTIMIDX", 8);
    assert_int_equal(le32_get(o + 8), 1);
    assert_int_equal(le32_get(o + 12), 8);
    assert_int_equal(le32_get(t + 12), 12);
    assert_int_equal(le64_get(o + 16), BASE);
    assert_int_equal(le64_get(o + 24), SEG_BYTES);
    assert_int_equal(le64_get(t + 32), 99);
    assert_int_equal(le32_get(o + 40), 4);
    assert_int_equal(le32_get(o + 44), crc32c(o + 64, 32));
    assert_int_equal(le32_get(t + 44), crc32c(t + 64, 48));
    for (int i = 48; i < 60; i++) {
        assert_int_equal(o[i], 0);
    }
    assert_int_equal(le32_get(o + 60), crc32c(o, 60));
    assert_int_equal(le32_get(t + 60), crc32c(t, 60));
    /* Entry 2: rel 12, position 400, timestamp 30. */
    assert_int_equal(le32_get(o + 64 + 16), 12);
    assert_int_equal(le32_get(o + 64 + 20), 400);
    assert_int_equal(le64_get(t + 64 + 24), 30);
    assert_int_equal(le32_get(t + 64 + 32), 12);
    free(o);
    free(t);
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct index_meta meta;
    struct index got;

    for (uint32_t i = 0; i < 1000; i++) {
        add(&f->idx, i * 3 + 1, i * 90 + 5, (int64_t)i * 7 - 100);
    }
    write_files(f, &f->idx);
    assert_int_equal(index_read_meta(f->dir_fd, ONAME, TNAME, BASE, SEG_BYTES,
                                     &meta, errmsg),
                     0);
    assert_int_equal(meta.n_entries, 1000);
    assert_int_equal(meta.max_timestamp_ms, 99);
    assert_int_equal(meta.segment_bytes, SEG_BYTES);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), 0);
    assert_int_equal(got.n_entries, 1000);
    assert_memory_equal(got.entries, f->idx.entries,
                        1000 * sizeof *got.entries);
    index_free(&got);

    /* An empty index round-trips too. */
    index_free(&f->idx);
    write_files(f, &f->idx);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), 0);
    assert_int_equal(got.n_entries, 0);
    index_free(&got);
}

enum damage {
    DAMAGE_MISSING_OFFSET,
    DAMAGE_MISSING_TIME,
    DAMAGE_HEADER_BYTE,
    DAMAGE_STALE,
    DAMAGE_BASE,
    DAMAGE_SHORT,
    DAMAGE_LONG,
    DAMAGE_OFFSET_ENTRY,
    DAMAGE_TIME_ENTRY,
    DAMAGE_TIME_ENTRY_ORDERLY,
    DAMAGE_EMPTY_FILE,
    DAMAGE_MAGIC_SWAPPED,
};

static void damage(struct fx *f, enum damage d)
{
    uint8_t *p;
    size_t n;

    switch (d) {
    case DAMAGE_MISSING_OFFSET:
        assert_int_equal(unlinkat(f->dir_fd, ONAME, 0), 0);
        return;
    case DAMAGE_MISSING_TIME:
        assert_int_equal(unlinkat(f->dir_fd, TNAME, 0), 0);
        return;
    case DAMAGE_STALE:
    case DAMAGE_BASE:
        return;
    case DAMAGE_EMPTY_FILE:
        spit(f, TNAME, (const uint8_t *)"", 0);
        return;
    default:
        break;
    }
    p = slurp(f, d == DAMAGE_OFFSET_ENTRY ? ONAME : TNAME, &n);
    switch (d) {
    case DAMAGE_HEADER_BYTE:
        p[33] ^= 1;
        break;
    case DAMAGE_SHORT:
        n -= 4;
        break;
    case DAMAGE_LONG: {
        uint8_t *longer = realloc(p, n + 12);
        assert_non_null(longer);
        p = longer;
        memset(p + n, 0, 12);
        n += 12;
        break;
    }
    case DAMAGE_OFFSET_ENTRY:
        p[64 + 8 * 2 + 6] ^= 0x01; /* entry 2 position + 64 KiB */
        break;
    case DAMAGE_TIME_ENTRY:
        p[64 + 12 * 3 + 9] ^= 0x01; /* entry 3 rel_offset */
        break;
    case DAMAGE_TIME_ENTRY_ORDERLY:
        /* Entry 0's timestamp goes down by one: still in order, so only
         * the entries CRC notices. */
        le64_put(p + 64, le64_get(p + 64) - 1);
        break;
    case DAMAGE_MAGIC_SWAPPED:
        memcpy(p, "KPOFFIDX", 8);
        le32_put(p + 60, crc32c(p, 60));
        break;
    default:
        fail();
    }
    spit(f, d == DAMAGE_OFFSET_ENTRY ? ONAME : TNAME, p, n);
    free(p);
}

static void test_damage(void **state)
{
    struct fx *f = *state;
    static const struct {
        enum damage d;
        int want;
    } cases[] = {
        {DAMAGE_MISSING_OFFSET, KAPPA_ENOENT},
        {DAMAGE_MISSING_TIME, KAPPA_ENOENT},
        {DAMAGE_HEADER_BYTE, KAPPA_ECORRUPT},
        {DAMAGE_STALE, KAPPA_ECORRUPT},
        {DAMAGE_BASE, KAPPA_ECORRUPT},
        {DAMAGE_SHORT, KAPPA_ECORRUPT},
        {DAMAGE_LONG, KAPPA_ECORRUPT},
        {DAMAGE_OFFSET_ENTRY, KAPPA_ECORRUPT},
        {DAMAGE_TIME_ENTRY, KAPPA_ECORRUPT},
        {DAMAGE_TIME_ENTRY_ORDERLY, KAPPA_ECORRUPT},
        {DAMAGE_EMPTY_FILE, KAPPA_ECORRUPT},
        {DAMAGE_MAGIC_SWAPPED, KAPPA_ECORRUPT},
    };

    add_four(&f->idx);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct index got;
        int64_t base = cases[i].d == DAMAGE_BASE ? BASE + 1 : BASE;
        uint64_t bytes = cases[i].d == DAMAGE_STALE ? SEG_BYTES + 1 : SEG_BYTES;
        int rv;
        write_files(f, &f->idx);
        assert_int_equal(load(f, BASE, SEG_BYTES, &got), 0);
        index_free(&got);
        damage(f, cases[i].d);
        rv = load(f, base, bytes, &got);
        if (rv != cases[i].want) {
            fail_msg("case %zu: rv %d, want %d", i, rv, cases[i].want);
        }
        assert_int_equal(got.n_entries, 0);
        assert_null(got.entries);
    }
}

/* Files whose CRCs are right but whose contents are not. */
static void test_bad_but_checksummed(void **state)
{
    struct fx *f = *state;
    struct index other;
    struct index got;
    uint8_t *p;
    size_t n;

    /* Entries out of order. */
    add_four(&f->idx);
    f->idx.entries[2].position = 200;
    write_files(f, &f->idx);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), KAPPA_ECORRUPT);
    f->idx.entries[2].position = 400;

    /* A position at the end of the segment (700 bytes long): no batch
     * can start there. One byte longer and the same entries are fine. */
    meta_segment_bytes = 700;
    write_files(f, &f->idx);
    assert_int_equal(load(f, BASE, 700, &got), KAPPA_ECORRUPT);
    meta_segment_bytes = 701;
    write_files(f, &f->idx);
    assert_int_equal(load(f, BASE, 701, &got), 0);
    index_free(&got);
    meta_segment_bytes = SEG_BYTES;

    /* The two files from different writes. */
    index_init(&other);
    add(&other, 3, 100, 10);
    write_files(f, &f->idx);
    p = slurp(f, ONAME, &n);
    write_files(f, &other);
    spit(f, ONAME, p, n);
    free(p);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), KAPPA_ECORRUPT);
    index_free(&other);

    /* A header claiming 2^30 entries: refused before any allocation. */
    write_files(f, &f->idx);
    p = slurp(f, ONAME, &n);
    le32_put(p + 40, 1u << 30);
    le32_put(p + 60, crc32c(p, 60));
    spit(f, ONAME, p, n);
    free(p);
    kappa_alloc_fail_after(1);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), KAPPA_ECORRUPT);
    kappa_alloc_fail_after(0);
}

static void test_load_oom(void **state)
{
    struct fx *f = *state;
    struct index got;

    add_four(&f->idx);
    write_files(f, &f->idx);
    kappa_alloc_fail_after(1);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), KAPPA_ENOMEM);
    kappa_alloc_fail_after(0);
    assert_null(got.entries);
    assert_int_equal(load(f, BASE, SEG_BYTES, &got), 0);
    assert_int_equal(got.n_entries, 4);
    index_free(&got);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_lookup_offset),       T(test_lookup_time),
        T(test_truncate_and_grow),   T(test_file_format),
        T(test_round_trip),          T(test_damage),
        T(test_bad_but_checksummed), T(test_load_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
