/* kappad cluster mode: the node's Raft groups (consensus/group.h), the
 * metadata group on the initial voters, broker registration, forwarding of
 * metadata commands to the metadata leader, and the partition replicas this
 * node hosts according to the metadata state. Loop thread only. */
#ifndef KAPPA_BROKER_CLUSTER_H
#define KAPPA_BROKER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/config.h"
#include "broker/partition.h"
#include "common/mp.h"
#include "consensus/group.h"
#include "consensus/meta_fsm.h"

struct server;
struct cluster;

/* A metadata command finished: status 0 with the meta_fsm value, or a
 * KAPPA_E* code (the FSM's verdict, ENOT_LEADER, ETIMEDOUT, ESHUTDOWN). */
typedef void (*cluster_meta_cb)(void *arg, int status, int64_t value);

/* Opens DATA/meta (bootstrapping the metadata group with cluster.voters when
 * it is pristine) and starts the transport. Returns 0 or a KAPPA_E* code
 * with errmsg; on error the caller still calls cluster_close. */
int cluster_start(struct cluster **out, struct server *s, uv_loop_t *loop,
                  const struct broker_config *cfg, const char *client_host,
                  int client_port, char *errmsg);

/* Closes every group and handle; cb runs when all are closed. Pending
 * metadata commands complete with KAPPA_ESHUTDOWN. */
void cluster_close(struct cluster *cl, void (*cb)(void *arg), void *arg);

/* The partition (topic, index) if this node leads it and the group is
 * ready. Otherwise NULL with *err = KAPPA_EUNKNOWN_TOPIC,
 * KAPPA_EBAD_PARTITION or KAPPA_ENOT_LEADER, and a message naming the
 * leader (when known) in msg (KAPPA_ERRMSG_SIZE). */
struct partition *cluster_partition(struct cluster *cl, const char *name,
                                    size_t len, int64_t partition, int *err,
                                    char *msg);

/* Submits a metadata command (meta_fsm.h encoding) to the metadata leader:
 * proposed here when this node leads, else forwarded to the leader. Returns
 * 0 (cb runs later, exactly once) or KAPPA_ENOT_LEADER (no leader known:
 * msg says so), KAPPA_ENOMEM, KAPPA_ESHUTDOWN. */
int cluster_meta_submit(struct cluster *cl, const void *cmd, size_t len,
                        cluster_meta_cb cb, void *arg, char *msg);

/* Writes the Metadata result map (docs/protocol.md) from the metadata
 * state; names is at the array of n names, or n == UINT32_MAX for all. */
void cluster_put_metadata(struct cluster *cl, struct mp_writer *w,
                          struct mp_reader *names, uint32_t n);

/* Writes the ListTopics "topics" array; returns KAPPA_EUNKNOWN_TOPIC (no
 * output) when a named topic does not exist. */
int cluster_put_topics(struct cluster *cl, struct mp_writer *w,
                       struct mp_reader *names, uint32_t n, char *errmsg);

/* The metadata state (queries only), never NULL once started. */
const struct meta_fsm *cluster_meta(struct cluster *cl);

/* Calls fn for every partition replica hosted here with an open group
 * (metrics; read-only). topic and p are valid during the call only. */
typedef void (*cluster_replica_fn)(const char *topic, uint32_t partition,
                                   struct partition *p, struct group *g,
                                   void *arg);
void cluster_foreach_replica(struct cluster *cl, cluster_replica_fn fn,
                             void *arg);

/* Readiness: this node is registered (alive, current address) in the
 * metadata state and the metadata group has a known leader. */
bool cluster_is_ready(struct cluster *cl);

#endif /* KAPPA_BROKER_CLUSTER_H */
