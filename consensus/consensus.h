/* Seam for the Raft layer: today a partition is a single-replica log whose
 * commit point is its fsynced end. The next milestone replaces this with one
 * canonical/raft group per partition. */
#ifndef KAPPA_CONSENSUS_H
#define KAPPA_CONSENSUS_H

/* Version string of the linked raft library, for logs and Hello replies. */
const char *consensus_raft_version(void);

#endif /* KAPPA_CONSENSUS_H */
