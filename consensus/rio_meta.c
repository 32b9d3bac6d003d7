/*
 * raft.meta.1 / raft.meta.2: the Raft term and vote of one group.
 * Little-endian, 32 bytes, nothing else in the file:
 *
 *   offset size field
 *   0      4    magic    "KRM1"
 *   4      4    crc      u32  CRC-32C of bytes [8, 32)
 *   8      8    version  u64  >= 1, +1 per write; odd in raft.meta.1,
 *                             even in raft.meta.2
 *   16     8    term     u64  current term
 *   24     8    vote     u64  server voted for in term (0: none)
 *
 * Each write goes to the file that does not hold the newest record, so a
 * torn or lost write leaves the previous record intact in the other file;
 * load takes the valid copy with the higher version. The record is
 * overwritten in place (no rename): pwrite + fdatasync, plus a directory
 * fsync when the file is first created.
 */
#include "rio_meta.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/endian.h"
#include "common/err.h"
#include "common/log.h"

static const uint8_t meta_magic[4] = {'K', 'R', 'M', '1'};

_Static_assert(RIO_META_BYTES == 32, "meta record is 32 bytes");

void rio_meta_encode(const struct rio_meta *m, uint8_t *p)
{
    memcpy(p, meta_magic, sizeof meta_magic);
    le64_put(p + 8, m->version);
    le64_put(p + 16, m->term);
    le64_put(p + 24, m->vote);
    le32_put(p + 4, crc32c(p + 8, RIO_META_BYTES - 8));
}

int rio_meta_decode(const uint8_t *p, struct rio_meta *m)
{
    if (memcmp(p, meta_magic, sizeof meta_magic) != 0 ||
        le32_get(p + 4) != crc32c(p + 8, RIO_META_BYTES - 8)) {
        return KAPPA_ECORRUPT;
    }
    m->version = le64_get(p + 8);
    m->term = le64_get(p + 16);
    m->vote = le64_get(p + 24);
    return m->version == 0 ? KAPPA_ECORRUPT : 0;
}

static void meta_path(char *path, size_t size, const char *dir, int n)
{
    (void)snprintf(path, size, "%s/raft.meta.%d", dir, n);
}

/* Reads copy n: 0 with *m, 1 when the file does not exist, KAPPA_ECORRUPT
 * when it is short, long or does not decode, KAPPA_EIO. */
static int load_one(const char *dir, int n, struct rio_meta *m, char *errmsg)
{
    uint8_t p[RIO_META_BYTES + 1];
    char path[1024];
    ssize_t got;
    int fd;

    meta_path(path, sizeof path, dir, n);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            return 1;
        }
        kappa_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    do {
        got = pread(fd, p, sizeof p, 0);
    } while (got < 0 && errno == EINTR);
    close(fd);
    if (got < 0) {
        kappa_errmsg_printf(errmsg, "read %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    if (got != RIO_META_BYTES || rio_meta_decode(p, m) != 0 ||
        (m->version % 2 == 1) != (n == 1)) {
        kappa_log(KAPPA_LOG_WARN, "rio", "%s is damaged (%zd bytes); ignored",
                  path, got);
        return KAPPA_ECORRUPT;
    }
    return 0;
}

int rio_meta_load(const char *dir, struct rio_meta *m, char *errmsg)
{
    struct rio_meta one = {0};
    struct rio_meta two = {0};
    int rv1 = load_one(dir, 1, &one, errmsg);
    int rv2;

    if (rv1 == KAPPA_EIO) {
        return rv1;
    }
    rv2 = load_one(dir, 2, &two, errmsg);
    if (rv2 == KAPPA_EIO) {
        return rv2;
    }
    if (rv1 == 0 && (rv2 != 0 || one.version > two.version)) {
        *m = one;
        return 0;
    }
    if (rv2 == 0) {
        *m = two;
        return 0;
    }
    /* Neither copy is valid. Only a first write can leave meta.1 alone. */
    if (rv2 == 1) {
        memset(m, 0, sizeof *m);
        return 0;
    }
    kappa_errmsg_printf(errmsg, "%s/raft.meta.1 and .2 are both damaged", dir);
    return KAPPA_ECORRUPT;
}

static int fsync_dir(const char *dir, char *errmsg)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = 0;

    if (fd < 0 || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", dir, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

int rio_meta_store(const char *dir, const struct rio_meta *m, char *errmsg)
{
    uint8_t p[RIO_META_BYTES];
    char path[1024];
    struct stat st;
    bool is_new;
    ssize_t put;
    int fd;
    int rv = 0;

    rio_meta_encode(m, p);
    meta_path(path, sizeof path, dir, m->version % 2 == 1 ? 1 : 2);
    fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    is_new = fstat(fd, &st) != 0 || st.st_size == 0;
    do {
        put = pwrite(fd, p, sizeof p, 0);
    } while (put < 0 && errno == EINTR);
    if (put != (ssize_t)sizeof p) {
        rv = put < 0 ? kappa_err_from_errno(errno) : KAPPA_EIO;
        kappa_errmsg_printf(errmsg, "write %s: %s", path,
                            put < 0 ? strerror(errno) : "short write");
    } else if (fdatasync(fd) != 0) {
        rv = kappa_err_from_errno(errno);
        kappa_errmsg_printf(errmsg, "fdatasync %s: %s", path, strerror(errno));
    }
    if (rv != 0 && rv != KAPPA_ENOSPC) {
        rv = KAPPA_EIO;
    }
    close(fd);
    if (rv == 0 && is_new) {
        rv = fsync_dir(dir, errmsg);
    }
    return rv;
}
