/* Group commit for one partition.
 *
 * Happy path: partition_append writes batches to the page cache and calls
 * partition_maybe_sync, which (when no sync is in flight) prepares a
 * log_sync on the loop, runs its fdatasync in the libuv thread pool and, in
 * sync_done_cb back on the loop, completes it: the flushed offset (the high
 * watermark) advances, every waiter whose end offset is now durable is
 * acknowledged in FIFO order, every parked fetch watching the partition is
 * woken, and if more was appended while the fdatasync ran, the next one
 * starts at once. So at most one fdatasync per partition is in flight and
 * each covers every append that came before it.
 *
 * Failure modes: uv_queue_work failing or the fdatasync failing fails every
 * current waiter with KAPPA_EIO (fsync errors are not retried on the same
 * data: the kernel may already have dropped the dirty pages); the next
 * append tries again. Deleting the topic sets is_removing so no new sync
 * starts, and the owner waits for synced_cb before closing the log. */
#include "partition.h"

#include <string.h>
#include <time.h>

#include "common/assert.h"
#include "common/err.h"
#include "common/log.h"
#include "consensus/group.h"

#define COMPONENT "partition"

static int64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int partition_init(struct partition *p, uv_loop_t *loop, uint32_t id,
                   const char *dir, const struct log_config *cfg,
                   partition_synced_cb synced_cb, void *data, char *errmsg)
{
    p->loop = loop;
    p->id = id;
    p->log = NULL;
    p->is_syncing = 0;
    p->is_removing = 0;
    list_init(&p->waiters);
    list_init(&p->watches);
    list_init(&p->dirty_link);
    p->dirty_list = NULL;
    memset(&p->stats, 0, sizeof p->stats);
    p->synced_cb = synced_cb;
    p->data = data;
    p->sync_work.data = p;
    p->group = NULL;
    /* The log stamps segments with wall-clock time so that age roll and
     * retention survive restarts; uv_now is monotonic and per process. */
    return log_open(dir, cfg, wall_now_ms(), &p->log, errmsg);
}

static void fail_waiters(struct partition *p, int status)
{
    while (!list_is_empty(&p->waiters)) {
        struct partition_waiter *w =
            list_entry(p->waiters.next, struct partition_waiter, link);
        list_remove(&w->link);
        w->cb(w, status);
    }
}

/* Wakes every watch once. A callback may unlink its own watch (and others
 * of the same fetch), so the list is first moved aside. */
static void wake_watches(struct partition *p)
{
    struct list pending;
    if (list_is_empty(&p->watches)) {
        return;
    }
    list_move_all(&pending, &p->watches);
    while (!list_is_empty(&pending)) {
        struct partition_watch *w =
            list_entry(pending.next, struct partition_watch, link);
        list_remove(&w->link);
        list_push_back(&p->watches, &w->link);
        w->cb(w);
    }
}

void partition_init_group(struct partition *p, uv_loop_t *loop, uint32_t id,
                          struct group *g, void *data)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    p->id = id;
    p->log = group_log(g);
    list_init(&p->waiters);
    list_init(&p->watches);
    list_init(&p->dirty_link);
    p->data = data;
    p->group = g;
}

void partition_notify(struct partition *p)
{
    wake_watches(p);
}

void partition_detach(struct partition *p)
{
    p->is_removing = 1;
    wake_watches(p);
    while (!list_is_empty(&p->watches)) {
        list_remove(p->watches.next);
    }
    p->log = NULL;
    p->group = NULL;
}

void partition_close(struct partition *p, int status)
{
    KAPPA_ASSERT(!p->is_syncing);
    p->is_removing = 1;
    list_remove(&p->dirty_link);
    fail_waiters(p, status);
    wake_watches(p);
    /* A watch callback that stays parked must not keep pointing here. */
    while (!list_is_empty(&p->watches)) {
        list_remove(p->watches.next);
    }
    log_close(p->log);
    p->log = NULL;
}

static void sync_work_cb(uv_work_t *req)
{
    struct partition *p = req->data;
    log_sync_execute(&p->sync);
}

/* Acknowledges, in order, every waiter whose records are now durable. */
static void ack_durable(struct partition *p)
{
    int64_t flushed = log_flushed_offset(p->log);
    while (!list_is_empty(&p->waiters)) {
        struct partition_waiter *w =
            list_entry(p->waiters.next, struct partition_waiter, link);
        if (w->end_offset > flushed) {
            break;
        }
        list_remove(&w->link);
        w->cb(w, 0);
    }
}

/* Process-wide: one loop per process, read by the metrics scrape. */
static uint64_t n_fsyncs_total;

uint64_t partition_fsyncs_total(void)
{
    return n_fsyncs_total;
}

static void sync_done_cb(uv_work_t *req, int status)
{
    struct partition *p = req->data;
    int rv;
    KAPPA_ASSERT(p->is_syncing);
    p->is_syncing = 0;
    n_fsyncs_total++;
    if (status != 0) {
        /* Only UV_ECANCELED, which we never request. */
        p->sync.rv = KAPPA_ECANCELED;
    }
    rv = p->sync.rv;
    log_sync_complete(p->log, &p->sync);
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT,
                  "fdatasync failed partition=%u rv=%s", p->id,
                  kappa_err_name(rv));
        fail_waiters(p, KAPPA_EIO);
    } else {
        ack_durable(p);
        wake_watches(p);
        partition_maybe_sync(p);
    }
    if (p->synced_cb != NULL) {
        p->synced_cb(p);
    }
}

void partition_maybe_sync(struct partition *p)
{
    int rv;
    if (p->is_syncing || p->is_removing || p->log == NULL) {
        return;
    }
    rv = log_sync_prepare(p->log, &p->sync);
    if (rv == 1) {
        return; /* everything appended is already durable */
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT,
                  "sync prepare failed partition=%u rv=%s", p->id,
                  kappa_err_name(rv));
        fail_waiters(p, rv == KAPPA_EBUSY ? KAPPA_EIO : rv);
        return;
    }
    rv = uv_queue_work(p->loop, &p->sync_work, sync_work_cb, sync_done_cb);
    if (rv != 0) {
        p->sync.rv = KAPPA_EIO;
        log_sync_complete(p->log, &p->sync);
        fail_waiters(p, KAPPA_EIO);
        return;
    }
    p->is_syncing = 1;
}

int partition_append(struct partition *p, uint8_t *data, size_t n,
                     int64_t *base_offset, int64_t *end_offset, char *errmsg)
{
    int rv;
    if (p->is_removing) {
        kappa_errmsg_printf(errmsg, "topic is being deleted");
        return KAPPA_EUNKNOWN_TOPIC;
    }
    /* Term 0 until the partition is a Raft group. */
    rv = log_append(p->log, data, n, 0, wall_now_ms(), base_offset, errmsg);
    if (rv != 0) {
        return rv;
    }
    *end_offset = log_end_offset(p->log);
    if (p->dirty_list == NULL) {
        partition_maybe_sync(p);
    } else if (!list_is_linked(&p->dirty_link)) {
        list_push_back(p->dirty_list, &p->dirty_link);
    }
    return 0;
}

void partition_sync_dirty(struct list *dirty_list)
{
    while (!list_is_empty(dirty_list)) {
        struct partition *p =
            list_entry(dirty_list->next, struct partition, dirty_link);
        list_remove(&p->dirty_link);
        partition_maybe_sync(p);
    }
}

int64_t partition_high_watermark(const struct partition *p)
{
    if (p->group != NULL) {
        return group_commit_offset(p->group);
    }
    return log_flushed_offset(p->log);
}

void partition_wait(struct partition *p, struct partition_waiter *w,
                    int64_t end_offset, partition_waiter_cb cb)
{
    KAPPA_ASSERT(end_offset > log_flushed_offset(p->log));
    w->end_offset = end_offset;
    w->cb = cb;
    list_push_back(&p->waiters, &w->link);
}

void partition_watch(struct partition *p, struct partition_watch *w,
                     partition_watch_cb cb)
{
    w->cb = cb;
    list_push_back(&p->watches, &w->link);
}

void partition_unwatch(struct partition_watch *w)
{
    list_remove(&w->link);
}
