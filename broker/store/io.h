/* Whole-buffer pread/pwrite and fsync wrappers that retry EINTR and short
 * transfers and map errno to KAPPA_E* codes. Private to broker/store. */
#ifndef KAPPA_BROKER_STORE_IO_H
#define KAPPA_BROKER_STORE_IO_H

#include <stddef.h>
#include <stdint.h>

/* Reads up to n bytes at off; *n_read < n only at end of file. Returns 0 or
 * a KAPPA_E* code (errno is kept for the caller's message). */
int io_pread(int fd, void *buf, size_t n, uint64_t off, size_t *n_read);

/* Writes all n bytes at off. Returns 0, KAPPA_ENOSPC or KAPPA_EIO. */
int io_pwrite(int fd, const void *buf, size_t n, uint64_t off);

/* fdatasync / fsync. Return 0 or KAPPA_EIO (KAPPA_ENOSPC for ENOSPC). */
int io_fdatasync(int fd);
int io_fsync(int fd);

#endif /* KAPPA_BROKER_STORE_IO_H */
