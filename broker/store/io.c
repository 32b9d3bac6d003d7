#include "io.h"

#include <errno.h>
#include <unistd.h>

#include "common/err.h"

int io_pread(int fd, void *buf, size_t n, uint64_t off, size_t *n_read)
{
    uint8_t *p = buf;
    size_t done = 0;

    while (done < n) {
        ssize_t r = pread(fd, p + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            *n_read = done;
            return kappa_err_from_errno(errno);
        }
        if (r == 0) {
            break;
        }
        done += (size_t)r;
    }
    *n_read = done;
    return 0;
}

int io_pwrite(int fd, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    size_t done = 0;

    /* A regular file takes the whole buffer in one call unless the disk
     * fills up or a signal lands; the loop only covers those cases. */
    while (done < n) {
        ssize_t w = pwrite(fd, p + done, n - done, (off_t)(off + done));
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w < 0) {
            return errno == ENOSPC || errno == EDQUOT ? KAPPA_ENOSPC
                                                      : KAPPA_EIO;
        }
        if (w == 0) {
            errno = EIO;
            return KAPPA_EIO;
        }
        done += (size_t)w;
    }
    return 0;
}

static int sync_rv(int r)
{
    if (r == 0) {
        return 0;
    }
    return errno == ENOSPC || errno == EDQUOT ? KAPPA_ENOSPC : KAPPA_EIO;
}

int io_fdatasync(int fd)
{
    return sync_rv(fdatasync(fd));
}

int io_fsync(int fd)
{
    return sync_rv(fsync(fd));
}
