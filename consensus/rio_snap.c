/*
 * Snapshot manifests of rio. One image, used both as the file
 * <dir>/snap-<term %020>-<index %020> and as the data of an InstallSnapshot
 * message (snapshot_get returns the file's bytes unchanged; the follower's
 * snapshot_put parses them and strips everything before the FSM bytes).
 * Little-endian:
 *
 *   offset size field
 *   0      8    magic        "KAPPASNP"
 *   8      4    crc          u32  CRC-32C of bytes [12, end of image)
 *   12     4    version      u32  1
 *   16     8    index        u64  last Raft index the snapshot covers
 *   24     8    term         u64  term of that entry
 *   32     8    conf_index   u64  index of the configuration below
 *   40     8    end_offset   i64  store offset after the last covered entry
 *   48     8    data_bytes   u64  length of the FSM bytes
 *   56     4    conf_bytes   u32  length of the configuration
 *   60     4    reserved     u32  zero
 *   64     conf_bytes             configuration:
 *                                   u32 n_servers (1 .. 1024), then each:
 *                                   u64 id (> 0), u8 role (0 standby,
 *                                   1 voter, 2 spare), u16 address length
 *                                   (1 .. 1024), address bytes (no NUL)
 *   64 + conf_bytes  data_bytes   the FSM's snapshot, verbatim
 *
 * The image is at most RIO_SNAP_BYTES_MAX. A file is written as
 * "<name>.tmp", fsynced, renamed and the directory fsynced, so a crash
 * leaves either the whole file or a .tmp that the next prune removes.
 */
#include "rio_snap.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"

#define SNAP_VERSION     1
#define SNAP_OFF_CRC     8
#define SNAP_CRC_START   12
#define SNAP_NAME_DIGITS 20
#define SNAP_NAME_BYTES  (5 + SNAP_NAME_DIGITS + 1 + SNAP_NAME_DIGITS)

static const uint8_t snap_magic[8] = {'K', 'A', 'P', 'P', 'A', 'S', 'N', 'P'};

_Static_assert(RIO_SNAP_HEADER_BYTES == 64, "snapshot header is 64 bytes");
_Static_assert(SNAP_NAME_BYTES + 5 <= RIO_SNAP_NAME_SIZE, "name fits");

static size_t conf_size(const struct raft_configuration *conf)
{
    size_t n = 4;

    for (unsigned i = 0; i < conf->n; i++) {
        n += 8 + 1 + 2 + strlen(conf->servers[i].address);
    }
    return n;
}

static uint8_t *conf_put(uint8_t *p, const struct raft_configuration *conf)
{
    le32_put(p, conf->n);
    p += 4;
    for (unsigned i = 0; i < conf->n; i++) {
        const struct raft_server *s = &conf->servers[i];
        size_t len = strlen(s->address);
        le64_put(p, s->id);
        p[8] = (uint8_t)s->role;
        le16_put(p + 9, (uint16_t)len);
        memcpy(p + 11, s->address, len);
        p += 11 + len;
    }
    return p;
}

static bool conf_is_encodable(const struct raft_configuration *conf)
{
    if (conf->n == 0 || conf->n > RIO_SNAP_SERVERS_MAX) {
        return false;
    }
    for (unsigned i = 0; i < conf->n; i++) {
        size_t len = strlen(conf->servers[i].address);
        if (len == 0 || len > RIO_SNAP_ADDRESS_BYTES_MAX) {
            return false;
        }
    }
    return true;
}

int rio_snap_prefix(struct buf *out, struct rio_snap_header *h,
                    const struct raft_configuration *conf,
                    const struct raft_buffer *bufs, unsigned n_bufs)
{
    uint64_t data_bytes = 0;
    size_t conf_bytes;
    uint8_t *p;
    uint32_t crc;

    if (!conf_is_encodable(conf)) {
        return KAPPA_ETOOBIG;
    }
    for (unsigned i = 0; i < n_bufs; i++) {
        data_bytes += bufs[i].len;
    }
    conf_bytes = conf_size(conf);
    if (data_bytes + conf_bytes + RIO_SNAP_HEADER_BYTES > RIO_SNAP_BYTES_MAX) {
        return KAPPA_ETOOBIG;
    }
    out->len = 0;
    if (buf_reserve(out, RIO_SNAP_HEADER_BYTES + conf_bytes) != 0) {
        return KAPPA_ENOMEM;
    }
    h->data_bytes = data_bytes;
    h->conf_bytes = (uint32_t)conf_bytes;
    p = out->data;
    memcpy(p, snap_magic, sizeof snap_magic);
    le32_put(p + 12, SNAP_VERSION);
    le64_put(p + 16, h->index);
    le64_put(p + 24, h->term);
    le64_put(p + 32, h->conf_index);
    le64_put(p + 40, (uint64_t)h->end_offset);
    le64_put(p + 48, h->data_bytes);
    le32_put(p + 56, h->conf_bytes);
    le32_put(p + 60, 0);
    conf_put(p + RIO_SNAP_HEADER_BYTES, conf);
    out->len = RIO_SNAP_HEADER_BYTES + conf_bytes;
    crc = crc32c(p + SNAP_CRC_START, out->len - SNAP_CRC_START);
    for (unsigned i = 0; i < n_bufs; i++) {
        crc = crc32c_extend(crc, bufs[i].base, bufs[i].len);
    }
    le32_put(p + SNAP_OFF_CRC, crc);
    return 0;
}

/* Decodes the configuration; returns 0 or KAPPA_ECORRUPT. */
static int conf_get(const uint8_t *p, size_t n, struct raft_configuration *c)
{
    char address[RIO_SNAP_ADDRESS_BYTES_MAX + 1];
    const uint8_t *end = p + n;
    uint32_t n_servers;
    int rv;

    if (n < 4) {
        return KAPPA_ECORRUPT;
    }
    n_servers = le32_get(p);
    p += 4;
    if (n_servers == 0 || n_servers > RIO_SNAP_SERVERS_MAX) {
        return KAPPA_ECORRUPT;
    }
    for (uint32_t i = 0; i < n_servers; i++) {
        uint64_t id;
        uint16_t len;
        int role;
        if (end - p < 11) {
            return KAPPA_ECORRUPT;
        }
        id = le64_get(p);
        role = p[8];
        len = le16_get(p + 9);
        p += 11;
        if (len == 0 || len > RIO_SNAP_ADDRESS_BYTES_MAX || end - p < len) {
            return KAPPA_ECORRUPT;
        }
        memcpy(address, p, len);
        address[len] = '\0';
        p += len;
        if (id == 0 || role > RAFT_SPARE || strlen(address) != len) {
            return KAPPA_ECORRUPT;
        }
        rv = raft_configuration_add(c, id, address, role);
        if (rv != 0) { /* a duplicate id or address */
            return rv == RAFT_NOMEM ? KAPPA_ENOMEM : KAPPA_ECORRUPT;
        }
    }
    return p == end ? 0 : KAPPA_ECORRUPT;
}

int rio_snap_parse(const uint8_t *p, size_t n, struct rio_snap_header *h,
                   struct raft_configuration *conf)
{
    int rv;

    if (n < RIO_SNAP_HEADER_BYTES || n > RIO_SNAP_BYTES_MAX ||
        memcmp(p, snap_magic, sizeof snap_magic) != 0 ||
        le32_get(p + 12) != SNAP_VERSION || le32_get(p + 60) != 0) {
        return KAPPA_ECORRUPT;
    }
    h->index = le64_get(p + 16);
    h->term = le64_get(p + 24);
    h->conf_index = le64_get(p + 32);
    h->end_offset = (int64_t)le64_get(p + 40);
    h->data_bytes = le64_get(p + 48);
    h->conf_bytes = le32_get(p + 56);
    if (h->index == 0 || h->end_offset < 0 ||
        h->conf_bytes > n - RIO_SNAP_HEADER_BYTES ||
        h->data_bytes != n - RIO_SNAP_HEADER_BYTES - h->conf_bytes) {
        return KAPPA_ECORRUPT;
    }
    if (le32_get(p + SNAP_OFF_CRC) !=
        crc32c(p + SNAP_CRC_START, n - SNAP_CRC_START)) {
        return KAPPA_ECORRUPT;
    }
    if (conf == NULL) {
        return 0;
    }
    raft_configuration_init(conf);
    rv = conf_get(p + RIO_SNAP_HEADER_BYTES, h->conf_bytes, conf);
    if (rv != 0) {
        raft_configuration_close(conf);
    }
    return rv;
}

void rio_snap_name(char *name, const struct rio_snap_id *id)
{
    (void)snprintf(name, RIO_SNAP_NAME_SIZE, "snap-%020" PRIu64 "-%020" PRIu64,
                   id->term, id->index);
}

static int parse_digits(const char *s, uint64_t *v)
{
    *v = 0;
    for (int i = 0; i < SNAP_NAME_DIGITS; i++) {
        if (s[i] < '0' || s[i] > '9' ||
            *v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10) {
            return -1;
        }
        *v = *v * 10 + (uint64_t)(s[i] - '0');
    }
    return 0;
}

/* 0: a snapshot name; 1: a temporary one; -1: something else. */
static int parse_name(const char *name, struct rio_snap_id *id)
{
    if (strncmp(name, "snap-", 5) != 0 || strlen(name) < SNAP_NAME_BYTES ||
        name[5 + SNAP_NAME_DIGITS] != '-' ||
        parse_digits(name + 5, &id->term) != 0 ||
        parse_digits(name + 5 + SNAP_NAME_DIGITS + 1, &id->index) != 0) {
        return -1;
    }
    if (name[SNAP_NAME_BYTES] == '\0') {
        return 0;
    }
    return strcmp(name + SNAP_NAME_BYTES, ".tmp") == 0 ? 1 : -1;
}

static bool is_newer(const struct rio_snap_id *a, const struct rio_snap_id *b)
{
    return a->index > b->index || (a->index == b->index && a->term > b->term);
}

static int fsync_path(const char *path, int flags, char *errmsg)
{
    int fd = open(path, flags | O_CLOEXEC);
    int rv = 0;

    if (fd < 0 || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", path, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;

    while (n > 0) {
        ssize_t put = write(fd, q, n);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            return put < 0 ? kappa_err_from_errno(errno) : KAPPA_EIO;
        }
        q += put;
        n -= (size_t)put;
    }
    return 0;
}

static int write_file(const char *path, const struct buf *prefix,
                      const struct raft_buffer *bufs, unsigned n_bufs)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rv;

    if (fd < 0) {
        return KAPPA_EIO;
    }
    rv = write_all(fd, prefix->data, prefix->len);
    for (unsigned i = 0; rv == 0 && i < n_bufs; i++) {
        rv = write_all(fd, bufs[i].base, bufs[i].len);
    }
    if (rv == 0 && fsync(fd) != 0) {
        rv = kappa_err_from_errno(errno);
    }
    close(fd);
    return rv;
}

int rio_snap_write(const char *dir, const struct rio_snap_id *id,
                   const struct buf *prefix, const struct raft_buffer *bufs,
                   unsigned n_bufs, char *errmsg)
{
    char name[RIO_SNAP_NAME_SIZE];
    char tmp[1100];
    char path[1100];
    int rv;

    rio_snap_name(name, id);
    (void)snprintf(path, sizeof path, "%s/%s", dir, name);
    (void)snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    rv = write_file(tmp, prefix, bufs, n_bufs);
    if (rv == 0 && rename(tmp, path) != 0) {
        rv = KAPPA_EIO;
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", tmp, strerror(errno));
        (void)unlink(tmp);
        return rv == KAPPA_ENOSPC ? rv : KAPPA_EIO;
    }
    return fsync_path(dir, O_RDONLY | O_DIRECTORY, errmsg);
}

typedef void (*snap_entry_cb)(const char *dir, const char *name, int kind,
                              const struct rio_snap_id *id, void *arg);

static int dir_each(const char *dir, void *arg, char *errmsg, snap_entry_cb fn)
{
    struct dirent *de;
    DIR *d = opendir(dir);

    if (d == NULL) {
        kappa_errmsg_printf(errmsg, "list %s: %s", dir, strerror(errno));
        return KAPPA_EIO;
    }
    while ((de = readdir(d)) != NULL) {
        struct rio_snap_id id;
        int kind = parse_name(de->d_name, &id);
        if (kind >= 0) {
            fn(dir, de->d_name, kind, &id, arg);
        }
    }
    closedir(d);
    return 0;
}

struct newest {
    struct rio_snap_id ids[2];
    unsigned n;
};

static void keep_newest(const char *dir, const char *name, int kind,
                        const struct rio_snap_id *id, void *arg)
{
    struct newest *nw = arg;

    (void)dir;
    (void)name;
    if (kind != 0) {
        return;
    }
    if (nw->n == 0 || is_newer(id, &nw->ids[0])) {
        nw->ids[1] = nw->ids[0];
        nw->ids[0] = *id;
    } else if (nw->n == 1 || is_newer(id, &nw->ids[1])) {
        nw->ids[1] = *id;
    }
    if (nw->n < 2) {
        nw->n++;
    }
}

int rio_snap_list(const char *dir, struct rio_snap_id *ids, unsigned *n,
                  char *errmsg)
{
    struct newest nw = {.n = 0};
    int rv = dir_each(dir, &nw, errmsg, keep_newest);

    if (rv == 0) {
        memcpy(ids, nw.ids, sizeof nw.ids);
        *n = nw.n;
    }
    return rv;
}

static void remove_old(const char *dir, const char *name, int kind,
                       const struct rio_snap_id *id, void *arg)
{
    const struct newest *nw = arg;
    char path[1100];

    for (unsigned i = 0; kind == 0 && i < nw->n; i++) {
        if (nw->ids[i].index == id->index && nw->ids[i].term == id->term) {
            return;
        }
    }
    (void)snprintf(path, sizeof path, "%s/%s", dir, name);
    if (unlink(path) != 0) {
        kappa_log(KAPPA_LOG_WARN, "rio", "remove %s: %s", path,
                  strerror(errno));
    }
}

int rio_snap_prune(const char *dir, char *errmsg)
{
    struct newest nw = {.n = 0};
    int rv = dir_each(dir, &nw, errmsg, keep_newest);

    if (rv == 0) {
        rv = dir_each(dir, &nw, errmsg, remove_old);
    }
    return rv;
}

int rio_snap_read(const char *dir, const struct rio_snap_id *id, uint8_t **out,
                  size_t *n, char *errmsg)
{
    char name[RIO_SNAP_NAME_SIZE];
    char path[1100];
    struct stat st;
    uint8_t *p = NULL;
    size_t got = 0;
    int fd;
    int rv = 0;

    rio_snap_name(name, id);
    (void)snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        rv = KAPPA_EIO;
        goto out;
    }
    if (st.st_size < RIO_SNAP_HEADER_BYTES || st.st_size > RIO_SNAP_BYTES_MAX) {
        kappa_errmsg_printf(errmsg, "%s: size %lld", path,
                            (long long)st.st_size);
        rv = KAPPA_ECORRUPT;
        goto out;
    }
    p = raft_malloc((size_t)st.st_size);
    if (p == NULL) {
        rv = KAPPA_ENOMEM;
        goto out;
    }
    while (rv == 0 && got < (size_t)st.st_size) {
        ssize_t r = pread(fd, p + got, (size_t)st.st_size - got, (off_t)got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            kappa_errmsg_printf(errmsg, "read %s: %s", path,
                                r < 0 ? strerror(errno) : "short file");
            rv = KAPPA_EIO;
        } else {
            got += (size_t)r;
        }
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    if (rv != 0) {
        raft_free(p);
        return rv;
    }
    *out = p;
    *n = got;
    return 0;
}
