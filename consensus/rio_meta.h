/* rio's persistent Raft term and vote: a 32-byte record written alternately
 * to raft.meta.1 and raft.meta.2 in a group's directory, so a torn write
 * never loses the previous value. Blocking file I/O on the calling thread
 * (elections only). The format is at the top of rio_meta.c. */
#ifndef KAPPA_CONSENSUS_RIO_META_H
#define KAPPA_CONSENSUS_RIO_META_H

#include <stdint.h>

#define RIO_META_BYTES 32

struct rio_meta {
    uint64_t version; /* 0: nothing stored yet; odd in .1, even in .2 */
    uint64_t term;
    uint64_t vote;
};

/* Encodes m into p[RIO_META_BYTES]; decodes it back. Decode returns 0 or
 * KAPPA_ECORRUPT (bad magic or CRC, version 0). */
void rio_meta_encode(const struct rio_meta *m, uint8_t *p);
int rio_meta_decode(const uint8_t *p, struct rio_meta *m);

/* Reads both files of dir and picks the valid one with the higher
 * version; a missing, short, or corrupt copy is ignored (logged) when the
 * other is valid. Neither file: a fresh {0, 0, 0}. Only raft.meta.1 and it
 * is damaged: also fresh (the very first write was torn; nothing else was
 * ever durable). Returns 0, KAPPA_ECORRUPT (no valid copy otherwise) or
 * KAPPA_EIO, with errmsg (KAPPA_ERRMSG_SIZE) filled. */
int rio_meta_load(const char *dir, struct rio_meta *m, char *errmsg);

/* Writes m (whose version the caller has just incremented; >= 1) to the
 * file its parity selects, then fdatasyncs it, and fsyncs dir the first
 * time the file is created. Returns 0, KAPPA_EIO or KAPPA_ENOSPC. */
int rio_meta_store(const char *dir, const struct rio_meta *m, char *errmsg);

#endif /* KAPPA_CONSENSUS_RIO_META_H */
