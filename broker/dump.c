/* kappad dump: an offline, read-only walk over the segment files of a data
 * directory. It never goes through log_open (which truncates a torn tail
 * and fsyncs): every byte is pread from the files as they are.
 *
 * Where partitions live:
 *   DATA/topics/<topic>/<partition>/<base>.log   single node
 *   DATA/groups/<gid>/log/<base>.log             cluster mode, with rio's
 *   DATA/groups/<gid>/snap-<term>-<index>        snapshot manifests and
 *   DATA/groups/<gid>/partition.info             "<topic>\n<partition>\n",
 *                                                written by broker/cluster.c
 * Without partition.info the partition number is gid % 16384
 * (GROUP_PARTITION_STRIDE) and the topic is printed as "g<gid>".
 *
 * Output (--format json, the default), one JSON value per line:
 *   {"kappa_dump":1,"node":N,"data_dir":D}
 *   per partition:
 *   {"partition":"t/p","topic":t,"index":p,"group":gid|null,"start":S,
 *    "end":E,"commit":C,"commit_source":"single_node"|"snapshot"|"log_end"}
 *   per batch:
 *   {"batch":base,"records":n,"term":t,"attributes":a,"control":bool,
 *    "compression":c,"bytes":b,"crc":"ok"|"mismatch","segment":name,
 *    "position":pos}
 *   per record:
 *   [offset,"crc",timestamp,"key_crc"|null,"value_crc"|null(,"value")]
 *   problems: {"error":what,"where":"t/p","segment":name,"position":pos}
 * where crc is the CRC-32C of the record's encoded bytes (length varint
 * through the last header) as 8 lowercase hex digits: jepsen/checker.py
 * compares the first two elements. --format text prints the same facts
 * for people.
 *
 * Limits: a batch is read only after its header said it is at most
 * KAPPA_BATCH_BYTES_MAX; a segment name must be 20 digits + ".log"; at
 * most DUMP_SEGMENTS_MAX segments per partition. */
#include "dump.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>

#include "common/alloc.h"
#include "common/batch.h"
#include "common/crc32c.h"
#include "common/err.h"
#include "consensus/group.h"
#include "consensus/rio_snap.h"

#define DUMP_PATH_BYTES      1024
#define DUMP_SEGMENTS_MAX    65536
#define DUMP_TOPIC_BYTES_MAX 256
#define DUMP_VALUE_SHOW_MAX  (1u << 20)
#define SEGMENT_NAME_DIGITS  20

struct dump_opts {
    const char *data_dir;
    const char *topic;   /* NULL: every topic */
    long long partition; /* -1: every partition */
    bool is_json;
    bool is_up_to_commit;
    bool is_values;
    bool is_force;
    char node[128];
};

/* One partition being dumped. */
struct dump_part {
    char key[DUMP_TOPIC_BYTES_MAX + 32]; /* "topic/partition" */
    char topic[DUMP_TOPIC_BYTES_MAX];
    uint32_t index;
    int64_t gid; /* -1: single node */
    char log_dir[DUMP_PATH_BYTES];
    int64_t *bases; /* segment base offsets, sorted */
    uint32_t n_segments;
    int64_t start, end, commit, limit;
    const char *commit_source;
    uint64_t n_batches, n_records, n_errors;
};

struct dump {
    struct dump_opts o;
    struct batch_reader reader;
    uint8_t *buf;
    size_t buf_cap;
    unsigned n_errors;
};

/* ---- output helpers -------------------------------------------------- */

/* Prints bytes as the inside of a JSON string: printable ASCII as is, '"'
 * and '\\' escaped, every other byte as \u00XX (bytes map to U+0000..FF). */
static void put_escaped(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c >= 0x20 && c < 0x7f) {
            putchar(c);
        } else {
            printf("\\u%04x", c);
        }
    }
}

static void put_str(const char *s)
{
    putchar('"');
    put_escaped((const uint8_t *)s, strlen(s));
    putchar('"');
}

static void report(struct dump *d, struct dump_part *p, const char *segment,
                   uint64_t position, const char *what)
{
    d->n_errors++;
    if (p != NULL) {
        p->n_errors++;
    }
    fprintf(stderr, "kappad dump: %s: %s%s%s at byte %" PRIu64 "\n",
            p != NULL ? p->key : d->o.data_dir, segment != NULL ? segment : "",
            segment != NULL ? ": " : "", what, position);
    if (d->o.is_json) {
        printf("{\"error\":");
        put_str(what);
        printf(",\"where\":");
        put_str(p != NULL ? p->key : "");
        printf(",\"segment\":");
        put_str(segment != NULL ? segment : "");
        printf(",\"position\":%" PRIu64 "}\n", position);
    } else {
        printf("  ERROR %s%s%s at byte %" PRIu64 "\n",
               segment != NULL ? segment : "", segment != NULL ? ": " : "",
               what, position);
    }
}

/* ---- segments -------------------------------------------------------- */

static bool parse_segment_name(const char *name, int64_t *base)
{
    char *end;
    long long v;
    if (strlen(name) != SEGMENT_NAME_DIGITS + 4 ||
        strcmp(name + SEGMENT_NAME_DIGITS, ".log") != 0) {
        return false;
    }
    for (int i = 0; i < SEGMENT_NAME_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9') {
            return false;
        }
    }
    errno = 0;
    v = strtoll(name, &end, 10);
    if (errno != 0 || v < 0 || end != name + SEGMENT_NAME_DIGITS) {
        return false;
    }
    *base = v;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Fills p->bases with the sorted base offsets of the .log files. */
static int list_segments(struct dump *d, struct dump_part *p)
{
    DIR *dir = opendir(p->log_dir);
    struct dirent *e;
    uint32_t cap = 0;
    if (dir == NULL) {
        report(d, p, NULL, 0, "cannot open the log directory");
        return KAPPA_EIO;
    }
    while ((e = readdir(dir)) != NULL) {
        int64_t base;
        if (!parse_segment_name(e->d_name, &base)) {
            continue;
        }
        if (p->n_segments == cap) {
            int64_t *a;
            if (cap >= DUMP_SEGMENTS_MAX) {
                closedir(dir);
                report(d, p, NULL, 0, "too many segments");
                return KAPPA_ETOOBIG;
            }
            cap = cap == 0 ? 16 : cap * 2;
            a = kappa_realloc(p->bases, cap * sizeof *a);
            if (a == NULL) {
                closedir(dir);
                return KAPPA_ENOMEM;
            }
            p->bases = a;
        }
        p->bases[p->n_segments++] = base;
    }
    closedir(dir);
    if (p->n_segments > 1) {
        qsort(p->bases, p->n_segments, sizeof *p->bases, cmp_i64);
    }
    return 0;
}

static int grow_buf(struct dump *d, size_t n)
{
    uint8_t *b;
    if (n <= d->buf_cap) {
        return 0;
    }
    b = kappa_realloc(d->buf, n);
    if (b == NULL) {
        return KAPPA_ENOMEM;
    }
    d->buf = b;
    d->buf_cap = n;
    return 0;
}

static bool pread_all(int fd, uint8_t *dst, size_t n, uint64_t pos)
{
    while (n > 0) {
        ssize_t r = pread(fd, dst, n, (off_t)pos);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        dst += r;
        n -= (size_t)r;
        pos += (uint64_t)r;
    }
    return true;
}

/* ---- records and batches --------------------------------------------- */

/* A key or value's CRC-32C as a quoted hex string, or null. */
static void put_field_crc(const struct dump *d, const uint8_t *p, uint32_t n,
                          bool is_null)
{
    if (is_null) {
        printf(d->o.is_json ? "null" : "-");
    } else {
        printf(d->o.is_json ? "\"%08" PRIx32 "\"" : "%08" PRIx32, crc32c(p, n));
    }
}

static void put_record(const struct dump *d, const struct record_view *rec,
                       uint32_t rec_crc)
{
    bool is_json = d->o.is_json;
    printf(is_json ? "[%" PRId64 ",\"%08" PRIx32 "\",%" PRId64 ","
                   : "    offset=%" PRId64 " crc=%08" PRIx32 " ts=%" PRId64
                     " key_crc=",
           rec->offset, rec_crc, rec->timestamp_ms);
    put_field_crc(d, rec->key, rec->key_len, rec->key == NULL);
    printf(is_json ? "," : " value_crc=");
    put_field_crc(d, rec->value, rec->value_len, rec->value == NULL);
    if (d->o.is_values) {
        printf(is_json ? "," : " value=");
        if (rec->value == NULL) {
            printf("null");
        } else {
            putchar('"');
            put_escaped(rec->value, rec->value_len < DUMP_VALUE_SHOW_MAX
                                        ? rec->value_len
                                        : DUMP_VALUE_SHOW_MAX);
            putchar('"');
        }
    }
    printf(is_json ? "]\n" : "\n");
}

static const char *compression_name(uint8_t attributes)
{
    switch (attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) {
    case 0:
        return "none";
    case 1:
        return "lz4";
    case 2:
        return "zstd";
    default:
        return "unknown";
    }
}

static void put_batch(const struct dump *d, const struct batch_header *h,
                      bool is_crc_ok, const char *segment, uint64_t position)
{
    bool is_control = (h->attributes & KAPPA_BATCH_ATTR_CONTROL) != 0;
    if (d->o.is_json) {
        printf("{\"batch\":%" PRId64 ",\"records\":%" PRIu32
               ",\"term\":%" PRIu64 ",\"attributes\":%u,\"control\":%s,"
               "\"compression\":\"%s\",\"bytes\":%" PRIu32
               ",\"crc\":\"%s\",\"segment\":\"%s\",\"position\":%" PRIu64 "}\n",
               h->base_offset, h->record_count, h->term,
               (unsigned)h->attributes, is_control ? "true" : "false",
               compression_name(h->attributes), h->batch_bytes,
               is_crc_ok ? "ok" : "mismatch", segment, position);
    } else {
        printf("  batch base=%" PRId64 " records=%" PRIu32 " term=%" PRIu64
               " attributes=0x%02x%s compression=%s bytes=%" PRIu32
               " crc=%s segment=%s position=%" PRIu64 "\n",
               h->base_offset, h->record_count, h->term,
               (unsigned)h->attributes, is_control ? " control" : "",
               compression_name(h->attributes), h->batch_bytes,
               is_crc_ok ? "ok" : "MISMATCH", segment, position);
    }
}

/* Prints the records of a batch whose CRC matched; stops at p->limit.
 * Returns 0 or KAPPA_ECORRUPT (reported). */
static int dump_records(struct dump *d, struct dump_part *p,
                        const char *segment, uint64_t position, size_t n)
{
    struct record_view rec;
    int rv = batch_reader_open(&d->reader, d->buf, n);
    if (rv != 0) {
        report(d, p, segment, position,
               rv == KAPPA_ENOMEM ? "out of memory decoding the batch"
                                  : "cannot decode the batch body");
        return KAPPA_ECORRUPT;
    }
    for (;;) {
        const uint8_t *rec_start = d->reader.pos;
        rv = batch_reader_next(&d->reader, &rec);
        if (rv == 0) {
            return 0;
        }
        if (rv != 1) {
            report(d, p, segment, position, "corrupt record in the batch");
            return KAPPA_ECORRUPT;
        }
        if (rec.offset >= p->limit) {
            return 0;
        }
        put_record(d, &rec,
                   crc32c(rec_start, (size_t)(d->reader.pos - rec_start)));
        p->n_records++;
    }
}

/* Walks one segment file batch by batch. *next is the offset the first
 * batch must have (-1: take the segment's); it is advanced past each
 * batch. Returns 0, 1 (reached the limit) or an error (reported). */
static int dump_segment(struct dump *d, struct dump_part *p, int64_t base,
                        int64_t *next)
{
    char name[SEGMENT_NAME_DIGITS + 8];
    char path[DUMP_PATH_BYTES + 32];
    struct batch_header h;
    struct stat st;
    uint64_t pos = 0;
    int fd, rv = 0;

    snprintf(name, sizeof name, "%020" PRId64 ".log", base);
    snprintf(path, sizeof path, "%s/%s", p->log_dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        report(d, p, name, 0, "cannot open the segment");
        if (fd >= 0) {
            close(fd);
        }
        return KAPPA_EIO;
    }
    if (*next >= 0 && *next != base) {
        report(d, p, name, 0, "segment base does not follow the previous");
    }
    *next = base;
    while (rv == 0 && pos < (uint64_t)st.st_size && *next < p->limit) {
        uint64_t left = (uint64_t)st.st_size - pos;
        bool is_crc_ok;
        if (left < KAPPA_BATCH_HEADER_BYTES) {
            report(d, p, name, pos, "torn batch header at the end");
            rv = KAPPA_ECORRUPT;
            break;
        }
        if (grow_buf(d, KAPPA_BATCH_HEADER_BYTES) != 0 ||
            !pread_all(fd, d->buf, KAPPA_BATCH_HEADER_BYTES, pos)) {
            report(d, p, name, pos, "read error");
            rv = KAPPA_EIO;
            break;
        }
        if (batch_header_decode(d->buf, KAPPA_BATCH_HEADER_BYTES, &h) != 0) {
            report(d, p, name, pos, "bad batch header");
            rv = KAPPA_ECORRUPT;
            break;
        }
        if (h.batch_bytes > left) {
            report(d, p, name, pos, "batch runs past the end of the file");
            rv = KAPPA_ECORRUPT;
            break;
        }
        if (h.base_offset != *next) {
            report(d, p, name, pos, "base offset does not follow");
        }
        if (grow_buf(d, h.batch_bytes) != 0 ||
            !pread_all(fd, d->buf, h.batch_bytes, pos)) {
            report(d, p, name, pos, "read error");
            rv = KAPPA_EIO;
            break;
        }
        is_crc_ok = batch_crc_compute(d->buf, h.batch_bytes) == h.crc;
        put_batch(d, &h, is_crc_ok, name, pos);
        p->n_batches++;
        if (!is_crc_ok) {
            report(d, p, name, pos, "crc mismatch; records not shown");
        } else {
            (void)dump_records(d, p, name, pos, h.batch_bytes);
        }
        *next = h.base_offset + (int64_t)h.record_count;
        pos += h.batch_bytes;
    }
    close(fd);
    if (rv == 0 && *next >= p->limit) {
        rv = 1;
    }
    return rv;
}

/* End offset of the last segment from its batch headers alone (the walk
 * stops at the first header that is bad or runs past the file). */
static int64_t scan_end(struct dump *d, struct dump_part *p, int64_t base)
{
    char path[DUMP_PATH_BYTES + 32];
    uint8_t hdr[KAPPA_BATCH_HEADER_BYTES];
    struct batch_header h;
    struct stat st;
    uint64_t pos = 0;
    int64_t end = base;
    int fd;

    (void)d;
    snprintf(path, sizeof path, "%s/%020" PRId64 ".log", p->log_dir, base);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return base;
    }
    if (fstat(fd, &st) == 0) {
        while ((uint64_t)st.st_size - pos >= sizeof hdr &&
               pread_all(fd, hdr, sizeof hdr, pos) &&
               batch_header_decode(hdr, sizeof hdr, &h) == 0 &&
               h.batch_bytes <= (uint64_t)st.st_size - pos &&
               h.base_offset == end) {
            end = h.base_offset + (int64_t)h.record_count;
            pos += h.batch_bytes;
        }
    }
    close(fd);
    return end;
}

/* The end offset of the newest valid snapshot manifest in dir; -1 if
 * there is none. */
static int64_t snapshot_end(const char *dir)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct rio_snap_id ids[2];
    unsigned n = 0;
    int64_t end = -1;

    if (rio_snap_list(dir, ids, &n, errmsg) != 0) {
        return -1;
    }
    for (unsigned i = 0; i < n && end < 0; i++) {
        struct rio_snap_header h;
        uint8_t *img = NULL;
        size_t img_bytes = 0;
        if (rio_snap_read(dir, &ids[i], &img, &img_bytes, errmsg) != 0) {
            continue;
        }
        if (rio_snap_parse(img, img_bytes, &h, NULL) == 0) {
            end = h.end_offset;
        }
        raft_free(img);
    }
    return end;
}

static void put_part_header(const struct dump *d, const struct dump_part *p)
{
    if (d->o.is_json) {
        printf("{\"partition\":");
        put_str(p->key);
        printf(",\"topic\":");
        put_str(p->topic);
        printf(",\"index\":%" PRIu32 ",\"group\":", p->index);
        if (p->gid >= 0) {
            printf("%" PRId64, p->gid);
        } else {
            printf("null");
        }
        printf(",\"start\":%" PRId64 ",\"end\":%" PRId64 ",\"commit\":%" PRId64
               ",\"commit_source\":\"%s\",\"up_to_commit\":%s}\n",
               p->start, p->end, p->commit, p->commit_source,
               p->limit < INT64_MAX ? "true" : "false");
    } else {
        printf("partition %s group=", p->key);
        if (p->gid >= 0) {
            printf("%" PRId64, p->gid);
        } else {
            printf("-");
        }
        printf(" start=%" PRId64 " end=%" PRId64 " commit=%" PRId64 " (%s)%s\n",
               p->start, p->end, p->commit, p->commit_source,
               p->limit < INT64_MAX ? " up-to-commit" : "");
    }
}

/* Sets start, end, commit and the print limit. group_dir is NULL on a
 * single node. */
static void part_bounds(struct dump *d, struct dump_part *p,
                        const char *group_dir)
{
    int64_t snap = -1;
    p->start = p->n_segments > 0 ? p->bases[0] : 0;
    p->end =
        p->n_segments > 0 ? scan_end(d, p, p->bases[p->n_segments - 1]) : 0;
    p->commit = p->end;
    p->limit = INT64_MAX;
    if (group_dir == NULL) {
        /* One replica: everything in its log is its commit. */
        p->commit_source = "single_node";
        return;
    }
    p->commit_source = "log_end";
    if (d->o.is_up_to_commit) {
        snap = snapshot_end(group_dir);
    }
    if (snap >= 0) {
        p->commit = snap < p->end ? snap : p->end;
        p->commit_source = "snapshot";
        p->limit = p->commit;
    } else if (d->o.is_up_to_commit) {
        fprintf(stderr,
                "kappad dump: %s: commit point unknown offline (no "
                "snapshot); printing the whole log\n",
                p->key);
    }
}

static void dump_partition(struct dump *d, struct dump_part *p,
                           const char *group_dir)
{
    int64_t next = -1;
    if (list_segments(d, p) != 0) {
        return;
    }
    part_bounds(d, p, group_dir);
    put_part_header(d, p);
    for (uint32_t i = 0; i < p->n_segments; i++) {
        int rv = dump_segment(d, p, p->bases[i], &next);
        if (rv == 1 || rv == KAPPA_ENOMEM) {
            break;
        }
    }
    if (!d->o.is_json) {
        printf("  total batches=%" PRIu64 " records=%" PRIu64 " errors=%" PRIu64
               "\n",
               p->n_batches, p->n_records, p->n_errors);
    }
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s[0] < '0' || s[0] > '9') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) {
        return false;
    }
    *out = v;
    return true;
}

static bool is_wanted(const struct dump *d, const char *topic, uint32_t index)
{
    return (d->o.topic == NULL || strcmp(d->o.topic, topic) == 0) &&
           (d->o.partition < 0 || d->o.partition == (long long)index);
}

static void run_part(struct dump *d, const char *topic, uint32_t index,
                     int64_t gid, const char *log_dir, const char *group_dir)
{
    struct dump_part p = {.index = index, .gid = gid};
    snprintf(p.topic, sizeof p.topic, "%s", topic);
    snprintf(p.key, sizeof p.key, "%s/%" PRIu32, topic, index);
    snprintf(p.log_dir, sizeof p.log_dir, "%s", log_dir);
    dump_partition(d, &p, group_dir);
    kappa_free(p.bases);
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(a, b);
}

static int cmp_numeric(const void *a, const void *b)
{
    unsigned long long x = strtoull(a, NULL, 10), y = strtoull(b, NULL, 10);
    return (x > y) - (x < y);
}

/* Sorted names of the entries of path (numeric names, when is_numeric,
 * sort by value). Returns the count, or -1. *out is kappa_malloc'd. */
static int list_names(const char *path, char (**out)[DUMP_TOPIC_BYTES_MAX],
                      bool is_numeric)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    char(*names)[DUMP_TOPIC_BYTES_MAX] = NULL;
    int n = 0, cap = 0;
    uint64_t v;
    if (dir == NULL) {
        return -1;
    }
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= DUMP_TOPIC_BYTES_MAX ||
            (is_numeric && !parse_u64(e->d_name, UINT64_MAX, &v))) {
            continue;
        }
        if (n == cap) {
            void *a;
            if (cap >= DUMP_SEGMENTS_MAX) {
                break;
            }
            cap = cap == 0 ? 16 : cap * 2;
            a = kappa_realloc(names, (size_t)cap * sizeof *names);
            if (a == NULL) {
                break;
            }
            names = a;
        }
        snprintf(names[n++], DUMP_TOPIC_BYTES_MAX, "%s", e->d_name);
    }
    closedir(dir);
    if (n > 1) {
        qsort(names, (size_t)n, sizeof *names,
              is_numeric ? cmp_numeric : cmp_name);
    }
    *out = names;
    return n;
}

static void run_single(struct dump *d)
{
    char path[DUMP_PATH_BYTES];
    char(*topics)[DUMP_TOPIC_BYTES_MAX] = NULL;
    int n_topics;
    snprintf(path, sizeof path, "%s/topics", d->o.data_dir);
    n_topics = list_names(path, &topics, false);
    for (int i = 0; i < n_topics; i++) {
        char tdir[DUMP_PATH_BYTES + DUMP_TOPIC_BYTES_MAX];
        char(*parts)[DUMP_TOPIC_BYTES_MAX] = NULL;
        int n_parts;
        snprintf(tdir, sizeof tdir, "%s/%s", path, topics[i]);
        n_parts = list_names(tdir, &parts, true);
        for (int j = 0; j < n_parts; j++) {
            char ldir[DUMP_PATH_BYTES * 2];
            uint64_t index;
            if (!parse_u64(parts[j], UINT32_MAX, &index) ||
                !is_wanted(d, topics[i], (uint32_t)index)) {
                continue;
            }
            snprintf(ldir, sizeof ldir, "%s/%s", tdir, parts[j]);
            run_part(d, topics[i], (uint32_t)index, -1, ldir, NULL);
        }
        kappa_free(parts);
    }
    kappa_free(topics);
}

/* Reads DIR/partition.info ("<topic>\n<partition>\n"); false when it is
 * missing or malformed. */
static bool read_info(const char *gdir, char *topic, uint32_t *index)
{
    char path[DUMP_PATH_BYTES * 2 + 32];
    char text[DUMP_TOPIC_BYTES_MAX + 32];
    char *nl;
    uint64_t v;
    size_t n;
    FILE *f;
    snprintf(path, sizeof path, "%s/partition.info", gdir);
    f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    nl = strchr(text, '\n');
    if (nl == NULL || nl == text ||
        (size_t)(nl - text) >= DUMP_TOPIC_BYTES_MAX) {
        return false;
    }
    *nl = '\0';
    if (n == 0 || text[n - 1] != '\n') {
        return false;
    }
    text[n - 1] = '\0';
    if (!parse_u64(nl + 1, UINT32_MAX, &v)) {
        return false;
    }
    memcpy(topic, text, (size_t)(nl - text) + 1);
    *index = (uint32_t)v;
    return true;
}

static void run_cluster(struct dump *d)
{
    char path[DUMP_PATH_BYTES];
    char(*groups)[DUMP_TOPIC_BYTES_MAX] = NULL;
    int n_groups;
    snprintf(path, sizeof path, "%s/groups", d->o.data_dir);
    n_groups = list_names(path, &groups, true);
    for (int i = 0; i < n_groups; i++) {
        char gdir[DUMP_PATH_BYTES * 2];
        char ldir[DUMP_PATH_BYTES * 2 + 8];
        char topic[DUMP_TOPIC_BYTES_MAX];
        uint64_t gid = strtoull(groups[i], NULL, 10);
        uint32_t index;
        if (gid > INT64_MAX) {
            continue;
        }
        snprintf(gdir, sizeof gdir, "%s/%s", path, groups[i]);
        if (!read_info(gdir, topic, &index)) {
            snprintf(topic, sizeof topic, "g%" PRIu64, gid);
            index = (uint32_t)(gid % GROUP_PARTITION_STRIDE);
        }
        if (!is_wanted(d, topic, index)) {
            continue;
        }
        snprintf(ldir, sizeof ldir, "%s/log", gdir);
        run_part(d, topic, index, (int64_t)gid, ldir, gdir);
    }
    kappa_free(groups);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: kappad dump DATA_DIR [--topic T] [--partition P]\n"
               "                  [--format text|json] [--up-to-commit] "
               "[--values]\n"
               "                  [--node NAME] [--force]\n"
               "Prints the partition logs of a stopped node (read-only).\n");
}

/* Returns 0, 1 (help printed) or 2 (usage error, printed). */
static int parse_opts(struct dump_opts *o, int argc, char **argv)
{
    const char *node = NULL;
    *o = (struct dump_opts){.partition = -1, .is_json = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--up-to-commit") == 0) {
            o->is_up_to_commit = true;
        } else if (strcmp(a, "--values") == 0) {
            o->is_values = true;
        } else if (strcmp(a, "--force") == 0) {
            o->is_force = true;
        } else if (strcmp(a, "--topic") == 0 && v != NULL) {
            o->topic = v;
            i++;
        } else if (strcmp(a, "--node") == 0 && v != NULL) {
            node = v;
            i++;
        } else if (strcmp(a, "--partition") == 0 && v != NULL &&
                   parse_u64(v, UINT32_MAX, &n)) {
            o->partition = (long long)n;
            i++;
        } else if (strcmp(a, "--format") == 0 && v != NULL &&
                   (strcmp(v, "json") == 0 || strcmp(v, "text") == 0)) {
            o->is_json = strcmp(v, "json") == 0;
            i++;
        } else if (a[0] != '-' && o->data_dir == NULL) {
            o->data_dir = a;
        } else {
            fprintf(stderr, "kappad dump: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o->data_dir == NULL) {
        usage(stderr);
        return 2;
    }
    if (node == NULL) {
        const char *slash = strrchr(o->data_dir, '/');
        node = slash != NULL && slash[1] != '\0' ? slash + 1 : o->data_dir;
    }
    snprintf(o->node, sizeof o->node, "%s", node);
    return 0;
}

/* A running kappad holds an exclusive flock on DATA/kappad.lock; a shared
 * one here refuses to read under it (and keeps a kappad from starting
 * while the dump runs). Returns the fd (-1: no lock file) or -2 (held). */
static int lock_shared(const struct dump_opts *o)
{
    char path[DUMP_PATH_BYTES + 32];
    int fd;
    snprintf(path, sizeof path, "%s/kappad.lock", o->data_dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) != 0) {
        close(fd);
        return -2;
    }
    return fd;
}

int dump_main(int argc, char **argv)
{
    static struct dump d;
    struct stat st;
    int lock_fd = -1, rv;

    rv = parse_opts(&d.o, argc, argv);
    if (rv != 0) {
        return rv == 1 ? 0 : 2;
    }
    if (stat(d.o.data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "kappad dump: %s: not a directory\n", d.o.data_dir);
        return 2;
    }
    if (!d.o.is_force) {
        lock_fd = lock_shared(&d.o);
        if (lock_fd == -2) {
            fprintf(stderr,
                    "kappad dump: %s is in use by a running kappad; stop it "
                    "first (or pass --force to read it anyway)\n",
                    d.o.data_dir);
            return 1;
        }
    }
    batch_reader_init(&d.reader);
    if (d.o.is_json) {
        printf("{\"kappa_dump\":1,\"node\":");
        put_str(d.o.node);
        printf(",\"data_dir\":");
        put_str(d.o.data_dir);
        printf("}\n");
    } else {
        printf("kappa dump node=%s data=%s\n", d.o.node, d.o.data_dir);
    }
    run_single(&d);
    run_cluster(&d);
    batch_reader_free(&d.reader);
    kappa_free(d.buf);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    if (fflush(stdout) != 0) {
        return 1;
    }
    return d.n_errors == 0 ? 0 : 1;
}
