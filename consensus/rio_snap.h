/* rio's snapshot manifests: a 64-byte rio header (index, term,
 * configuration index, end offset, lengths, CRC), rio's encoding of the
 * Raft configuration, then the FSM's snapshot bytes verbatim. The same
 * image is the file snap-<term>-<index> and the data of an InstallSnapshot
 * message, so a follower learns the end offset from it. The byte layout is
 * at the top of rio_snap.c. File functions block (threadpool); the codec
 * is pure. */
#ifndef KAPPA_CONSENSUS_RIO_SNAP_H
#define KAPPA_CONSENSUS_RIO_SNAP_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define RIO_SNAP_HEADER_BYTES 64
/* Manifests are small; this bounds what load and InstallSnapshot accept. */
#define RIO_SNAP_BYTES_MAX         (256u * 1024 * 1024)
#define RIO_SNAP_SERVERS_MAX       1024
#define RIO_SNAP_ADDRESS_BYTES_MAX 1024
/* "snap-" 20 digits "-" 20 digits ".tmp" and a NUL. */
#define RIO_SNAP_NAME_SIZE 64

struct rio_snap_header {
    uint64_t index;
    uint64_t term;
    uint64_t conf_index;
    int64_t end_offset; /* store offset after the last entry it covers */
    uint64_t data_bytes;
    uint32_t conf_bytes;
};

/* Identifies a snapshot file. */
struct rio_snap_id {
    uint64_t term;
    uint64_t index;
};

/* Writes header and configuration for a snapshot whose FSM bytes are
 * bufs[0..n_bufs) into out (replacing its contents), with the CRC over the
 * whole image. Fills h->conf_bytes and h->data_bytes. Returns 0,
 * KAPPA_ENOMEM or KAPPA_ETOOBIG (past the limits above). */
int rio_snap_prefix(struct buf *out, struct rio_snap_header *h,
                    const struct raft_configuration *conf,
                    const struct raft_buffer *bufs, unsigned n_bufs);

/* Checks a whole image p[0..n): magic, version, lengths, CRC and (when
 * conf is not NULL) the configuration, which is decoded into conf (raft
 * heap; the caller closes it). The FSM bytes are p[RIO_SNAP_HEADER_BYTES +
 * h->conf_bytes, n). Returns 0, KAPPA_ECORRUPT or KAPPA_ENOMEM (nothing
 * left allocated). */
int rio_snap_parse(const uint8_t *p, size_t n, struct rio_snap_header *h,
                   struct raft_configuration *conf);

/* "snap-%020llu-%020llu" (term, index). */
void rio_snap_name(char *name, const struct rio_snap_id *id);

/* Writes prefix + bufs to a temporary file, fsyncs it, renames it to its
 * name and fsyncs dir. Returns 0, KAPPA_EIO or KAPPA_ENOSPC. */
int rio_snap_write(const char *dir, const struct rio_snap_id *id,
                   const struct buf *prefix, const struct raft_buffer *bufs,
                   unsigned n_bufs, char *errmsg);

/* The (at most) two newest snapshots in dir by (index, term), newest
 * first, in ids[2]. Returns 0 or KAPPA_EIO. */
int rio_snap_list(const char *dir, struct rio_snap_id *ids, unsigned *n,
                  char *errmsg);

/* Removes every snapshot but the two newest, and leftover temporary
 * files. Returns 0 or KAPPA_EIO. */
int rio_snap_prune(const char *dir, char *errmsg);

/* Reads a whole snapshot file into a raft_malloc'd buffer (*out, *n).
 * Returns 0, KAPPA_ECORRUPT (larger than RIO_SNAP_BYTES_MAX or too short),
 * KAPPA_ENOMEM or KAPPA_EIO. */
int rio_snap_read(const char *dir, const struct rio_snap_id *id, uint8_t **out,
                  size_t *n, char *errmsg);

#endif /* KAPPA_CONSENSUS_RIO_SNAP_H */
