/* ClusterStatus (API 8): what this node knows locally about the cluster,
 * for `kappa cluster status` (which asks every broker and merges). Loop
 * thread only; read-only. */
#ifndef KAPPA_BROKER_STATUS_H
#define KAPPA_BROKER_STATUS_H

#include <stdint.h>

#include "broker/conn.h"
#include "common/mp.h"

/* args: {} (unknown keys ignored). Result: docs/protocol.md. */
void api_cluster_status(struct conn *c, uint32_t corr, struct mp_reader *args);

#endif /* KAPPA_BROKER_STATUS_H */
