/* One partition of a topic: owns its log plus the group-commit state that
 * turns appends into durable offsets, and the lists of producers waiting for
 * durability and fetches waiting for new data. This is the seam for
 * replication: later a Raft group replaces the local fdatasync, and the high
 * watermark becomes the commit index; callers only see append, wait and
 * watch. Loop thread only. */
#ifndef KAPPA_BROKER_PARTITION_H
#define KAPPA_BROKER_PARTITION_H

#include <stdint.h>
#include <uv.h>

#include "broker/list.h"
#include "broker/metrics.h"
#include "broker/store/log.h"

struct partition;
struct partition_waiter;
struct partition_watch;

/* A producer waiting until every offset below end_offset is durable; status
 * is 0 or a KAPPA_E* code (KAPPA_EIO when the fdatasync failed,
 * KAPPA_EUNKNOWN_TOPIC when the partition is removed first). */
typedef void (*partition_waiter_cb)(struct partition_waiter *w, int status);

struct partition_waiter {
    struct list link; /* in partition->waiters, ordered by end_offset */
    int64_t end_offset;
    partition_waiter_cb cb;
};

/* A parked fetch: cb runs when the high watermark advances or the
 * partition is being removed. The watch is left linked; the callee unlinks
 * it (partition_unwatch) when it is done waiting. */
typedef void (*partition_watch_cb)(struct partition_watch *w);

struct partition_watch {
    struct list link; /* in partition->watches */
    partition_watch_cb cb;
};

/* Runs after each group commit completes (success or not), so the owner can
 * finish a pending delete or shutdown once no sync is in flight. */
typedef void (*partition_synced_cb)(struct partition *p);

struct partition {
    uv_loop_t *loop;
    uint32_t id;
    struct log *log;
    int is_syncing;  /* a log_sync is in the thread pool */
    int is_removing; /* the topic is being deleted: no new syncs */
    uv_work_t sync_work;
    struct log_sync sync;
    struct list waiters;
    struct list watches;
    /* Appended but not yet covered by a sync: linked into *dirty_list until
     * partition_sync_dirty runs at the end of the loop pass, so one
     * fdatasync covers every append of that pass. */
    struct list dirty_link;
    struct list *dirty_list;
    partition_synced_cb synced_cb;
    void *data; /* owner's pointer (the topic) */
    /* Cluster mode: the Raft group whose store is log and whose commit
     * offset is the high watermark; NULL on a single node. */
    struct group *group;
    struct metrics_partition stats; /* hot-path counters (metrics.c) */
};

/* Opens the log in dir. Returns 0 or a KAPPA_E* code with errmsg. */
int partition_init(struct partition *p, uv_loop_t *loop, uint32_t id,
                   const char *dir, const struct log_config *cfg,
                   partition_synced_cb synced_cb, void *data, char *errmsg);

/* Cluster mode: a partition view of a replica's Raft group (its store,
 * borrowed; its commit offset as high watermark). No group commit of its
 * own: produce goes through group_propose_batch. */
void partition_init_group(struct partition *p, uv_loop_t *loop, uint32_t id,
                          struct group *g, void *data);

/* Cluster mode: wakes every parked fetch (the high watermark or the
 * leadership changed). */
void partition_notify(struct partition *p);

/* Cluster mode, before the group closes: wakes the parked fetches and
 * unlinks them, so nothing points here afterwards. */
void partition_detach(struct partition *p);

/* Fails remaining waiters with `status`, wakes watches, fsyncs and closes
 * the log. Precondition: no sync in flight. */
void partition_close(struct partition *p, int status);

/* Appends validated batches (rewritten in place: p is modified) and starts a
 * group commit if none is running. *base_offset and *end_offset receive the
 * first offset and one past the last. Returns 0 or a KAPPA_E* code with
 * errmsg. */
int partition_append(struct partition *p, uint8_t *data, size_t n,
                     int64_t *base_offset, int64_t *end_offset, char *errmsg);

static inline int partition_is_syncing(const struct partition *p)
{
    return p->is_syncing;
}

/* Appended to in this loop pass; its group commit starts at the pass end. */
static inline int partition_is_dirty(const struct partition *p)
{
    return list_is_linked(&p->dirty_link);
}

/* The offset below which records are durable and may be served. */
int64_t partition_high_watermark(const struct partition *p);

/* Queues w until end_offset is durable. w->cb runs exactly once, never from
 * inside this call. Preconditions: end_offset is above the high watermark
 * and a sync is in flight (partition_is_syncing) to make progress. */
void partition_wait(struct partition *p, struct partition_waiter *w,
                    int64_t end_offset, partition_waiter_cb cb);

void partition_watch(struct partition *p, struct partition_watch *w,
                     partition_watch_cb cb);
void partition_unwatch(struct partition_watch *w);

/* Starts a group commit if appended data is not yet durable and none is in
 * flight (also called by housekeeping as a safety net). */
void partition_maybe_sync(struct partition *p);

/* Starts a group commit for every partition on the dirty list (called once
 * per loop pass, after every request of the pass was handled). */
void partition_sync_dirty(struct list *dirty_list);

/* Group commits (fdatasyncs) completed by every partition of this process
 * (single node; cluster mode syncs through rio). */
uint64_t partition_fsyncs_total(void);

#endif /* KAPPA_BROKER_PARTITION_H */
