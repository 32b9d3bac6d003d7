/*
 * rio: raft 0.15's struct raft_io over a Kappa segment store (see rio.h).
 *
 * Happy path of an append:
 *   1. append() checks the entries (a command batch must be numbered
 *      rio_next_offset() with the entry's term), records each entry's
 *      (offset, term) in the tail, encodes them into one buffer and writes
 *      it with one log_append_exact (page cache, on the loop). The request
 *      joins the rio's pending FIFO and the rio the syncer's dirty list.
 *   2. The syncer's uv_prepare (end of the loop iteration) starts a round:
 *      every dirty rio's pending FIFO moves to its syncing FIFO and its log
 *      is log_sync_prepare'd; one uv_queue_work fdatasyncs them all.
 *   3. Back on the loop the round completes each sync and fires the
 *      syncing callbacks, in order. Appends made meanwhile wait for the
 *      next round.
 *
 * Failure modes:
 *   - A check fails (not a batch, wrong offset or term): append returns
 *     RAFT_INVALID and nothing is recorded.
 *   - A write, sync, truncate, reset or file write fails: the request gets
 *     RAFT_IOERR and the rio is failed: every later append completes with
 *     RAFT_IOERR (through a round, never synchronously), truncate returns
 *     it, snapshots complete with it. The group must be reopened.
 *   - InstallSnapshot (snapshot_put with trailing 0): the tail restarts at
 *     the manifest's index + 1 and end offset at once; appends made before
 *     the store is reset wait in the blocked FIFO and are written after.
 *   - Close: stops the tick timer, waits for every request (appends in a
 *     round or pending, snapshot and async work, sends), then calls raft's
 *     close callback. Pending appends are still synced, not cancelled.
 *
 * Index <-> offset: entries are consecutive batches. The tail holds the
 * (offset, term) of the entries raft keeps in memory after the newest
 * snapshot: indexes [first_index, first_index + n), plus next_offset, the
 * end of the last one. It is rebuilt by load from the snapshot's end
 * offset, cut by truncate, trimmed after a local snapshot and restarted by
 * an install, so it is as long as raft's own log at most.
 */
#include "rio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/store/log.h"
#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "rio_entry.h"
#include "rio_meta.h"
#include "rio_snap.h"

/* Bound on append requests in flight per group (pending, syncing and
 * blocked). raft 0.15 has none; a leader's in-flight applies are bounded
 * by the group layer. */
#define RIO_APPENDS_MAX (1u << 16)
/* Bound on sends in flight per group. */
#define RIO_SENDS_MAX (1u << 16)
/* An append call is written in pieces of at most this much (more than one
 * write only for a huge follower catch-up). */
#define RIO_WRITE_CHUNK_BYTES (8u * 1024 * 1024)
/* The encode buffer is kept between appends up to this size. */
#define RIO_SCRATCH_KEEP_BYTES (1u * 1024 * 1024)
/* load reads the store in pieces of this size (one raft batch each). */
#define RIO_LOAD_CHUNK_BYTES (4u * 1024 * 1024)

struct rio_pos {
    int64_t offset;
    uint64_t term;
};

/* (offset, term) of indexes [first_index, first_index + n). */
struct rio_tail {
    struct rio_pos *v;
    size_t head; /* v[head] is first_index */
    size_t n;
    size_t cap;
    uint64_t first_index;
    int64_t next_offset;
};

struct rio_append {
    struct rio_append *next;
    struct raft_io_append *req;
    const struct raft_entry *entries;
    unsigned n;
    int64_t base_offset;
    int status;
};

struct rio_fifo {
    struct rio_append *head;
    struct rio_append *tail;
};

struct rio_round_item {
    struct rio *rio;
    struct log_sync sync;
    int prepared; /* log_sync_prepare's result */
};

enum rio_op_kind { RIO_OP_PUT, RIO_OP_GET, RIO_OP_WORK };

/* A threadpool request: snapshot put or get, or raft's async work. */
struct rio_op {
    struct rio *rio;
    uv_work_t work;
    enum rio_op_kind kind;
    int status;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct raft_io_snapshot_put *put;
    struct raft_io_snapshot_get *get;
    struct raft_io_async_work *async;
    const struct raft_snapshot *snapshot;
    unsigned trailing;
    struct rio_snap_id id;
    struct rio_snap_header h;
    const struct raft_buffer *bufs;
    unsigned n_bufs;
    struct buf prefix;
    uint8_t *image; /* get: raft_malloc'd file bytes */
    size_t image_bytes;
};

/* A send in flight: rio's own request wraps raft's. */
struct rio_send {
    struct raft_io_send req;
    struct rio *rio;
    struct raft_io_send *outer;
};

struct rio {
    struct raft_io *io;
    uv_loop_t *loop;
    char *dir;
    struct log *log;
    uint64_t group_id;
    raft_id id;
    bool is_wrapped;
    struct rio_syncer *syncer;
    struct rio_sender sender;
    uint64_t random_state;
    uv_timer_t timer;
    raft_io_tick_cb tick_cb;
    raft_io_recv_cb recv_cb;
    struct rio_meta meta;
    struct rio_tail tail;
    bool has_snapshot;
    struct rio_snap_id snapshot;
    struct rio_fifo pending; /* written, waiting for a round */
    struct rio_fifo syncing; /* in the running round */
    struct rio_fifo blocked; /* waiting for an install */
    unsigned n_appends;      /* in the three FIFOs */
    unsigned n_sends;
    unsigned n_ops;
    struct buf scratch;
    struct batch_builder builder;
    bool is_initialized; /* io->init succeeded: timer and meta */
    bool is_started;
    bool is_dirty;    /* in the syncer's dirty list */
    bool is_in_round; /* the running round holds its log */
    bool is_installing;
    bool is_failed;
    bool is_closing;
    bool is_timer_closed;
    bool is_close_fired;
    raft_io_close_cb close_cb;
};

static void maybe_finish_close(struct rio *rio);
static void syncer_mark_dirty(struct rio *rio);

/* Wall-clock ms for the store's age-based rolls (like the broker's). */
static int64_t wall_ms(void)
{
    uv_timeval64_t tv;

    if (uv_gettimeofday(&tv) != 0) {
        return 0;
    }
    return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

_Static_assert(RAFT_ERRMSG_BUF_SIZE == KAPPA_ERRMSG_SIZE, "errmsg sizes");

static void rio_errmsg(struct rio *rio, const char *msg)
{
    kappa_errmsg_printf(rio->io->errmsg, "%s", msg);
}

/* Marks the rio failed after a store or file error (logged once). */
static void rio_fail(struct rio *rio, const char *what, const char *errmsg)
{
    if (!rio->is_failed) {
        kappa_log(KAPPA_LOG_ERROR, "rio",
                  "group %" PRIu64 ": %s: %s; the group must be reopened",
                  rio->group_id, what, errmsg);
    }
    rio->is_failed = true;
    kappa_errmsg_printf(rio->io->errmsg, "%s: %s", what, errmsg);
}

/* ---- The tail: (offset, term) per index ------------------------------ */

static void tail_reset(struct rio_tail *t, uint64_t first_index,
                       int64_t next_offset)
{
    t->head = 0;
    t->n = 0;
    t->first_index = first_index;
    t->next_offset = next_offset;
}

static int tail_reserve(struct rio_tail *t, size_t extra)
{
    size_t cap = t->cap == 0 ? 64 : t->cap;
    struct rio_pos *v;

    if (t->head + t->n + extra <= t->cap) {
        return 0;
    }
    if (t->head > 0) { /* slide down first */
        memmove(t->v, t->v + t->head, t->n * sizeof *t->v);
        t->head = 0;
        if (t->n + extra <= t->cap) {
            return 0;
        }
    }
    while (cap < t->n + extra) {
        cap *= 2;
    }
    v = kappa_realloc(t->v, cap * sizeof *v);
    if (v == NULL) {
        return KAPPA_ENOMEM;
    }
    t->v = v;
    t->cap = cap;
    return 0;
}

/* Reserved with tail_reserve first. */
static void tail_push(struct rio_tail *t, int64_t offset, uint64_t term,
                      int64_t next_offset)
{
    KAPPA_ASSERT(t->head + t->n < t->cap);
    t->v[t->head + t->n].offset = offset;
    t->v[t->head + t->n].term = term;
    t->n++;
    t->next_offset = next_offset;
}

static uint64_t tail_last_index(const struct rio_tail *t)
{
    return t->first_index + t->n - 1;
}

static bool tail_has(const struct rio_tail *t, uint64_t index)
{
    return index >= t->first_index && index - t->first_index < t->n;
}

static const struct rio_pos *tail_at(const struct rio_tail *t, uint64_t index)
{
    KAPPA_ASSERT(tail_has(t, index));
    return &t->v[t->head + (index - t->first_index)];
}

/* Store offset after entry index. */
static int64_t tail_end_of(const struct rio_tail *t, uint64_t index)
{
    return index == tail_last_index(t) ? t->next_offset
                                       : tail_at(t, index + 1)->offset;
}

/* Drops indexes up to and including index (after a snapshot), and gives
 * memory back when the array got mostly empty. */
static void tail_drop_through(struct rio_tail *t, uint64_t index)
{
    size_t k;

    if (index < t->first_index) {
        return;
    }
    k = index - t->first_index + 1;
    if (k > t->n) {
        k = t->n;
    }
    t->head += k;
    t->n -= k;
    t->first_index += k;
    if (t->n == 0) {
        t->head = 0;
    }
    if (t->cap > 1024 && t->n < t->cap / 4) {
        struct rio_pos *v = kappa_malloc(t->cap / 2 * sizeof *v);
        if (v != NULL) {
            memcpy(v, t->v + t->head, t->n * sizeof *v);
            kappa_free(t->v);
            t->v = v;
            t->cap /= 2;
            t->head = 0;
        }
    }
}

/* ---- FIFOs of append requests ---------------------------------------- */

static void fifo_push(struct rio_fifo *f, struct rio_append *a)
{
    a->next = NULL;
    if (f->tail == NULL) {
        f->head = a;
    } else {
        f->tail->next = a;
    }
    f->tail = a;
}

static struct rio_append *fifo_take_all(struct rio_fifo *f)
{
    struct rio_append *head = f->head;

    f->head = NULL;
    f->tail = NULL;
    return head;
}

/* ---- Group-commit syncer --------------------------------------------- */

int rio_syncer_init(struct rio_syncer *s, uv_loop_t *loop)
{
    memset(s, 0, sizeof *s);
    s->loop = loop;
    if (uv_prepare_init(loop, &s->prepare) != 0) {
        return KAPPA_EIO;
    }
    s->prepare.data = s;
    s->work.data = s;
    return 0;
}

static void syncer_maybe_finish_close(struct rio_syncer *s)
{
    if (!s->is_closing || !s->is_prepare_closed || s->is_running) {
        return;
    }
    kappa_free(s->dirty);
    kappa_free(s->round);
    s->dirty = NULL;
    s->round = NULL;
    s->cap_dirty = 0;
    s->cap_round = 0;
    if (s->close_cb != NULL) {
        s->close_cb(s);
    }
}

static void syncer_prepare_closed(uv_handle_t *h)
{
    struct rio_syncer *s = h->data;

    s->is_prepare_closed = true;
    syncer_maybe_finish_close(s);
}

void rio_syncer_close(struct rio_syncer *s, void (*cb)(struct rio_syncer *s))
{
    KAPPA_ASSERT(s->n_rios == 0);
    KAPPA_ASSERT(!s->is_closing);
    s->is_closing = true;
    s->close_cb = cb;
    uv_close((uv_handle_t *)&s->prepare, syncer_prepare_closed);
}

/* Every attached rio may need one slot in the dirty list and the round:
 * reserve them here so that an append never allocates for the syncer. */
static int syncer_attach(struct rio_syncer *s)
{
    unsigned n = s->n_rios + 1;

    KAPPA_ASSERT(!s->is_closing);
    if (n > s->cap_dirty) {
        unsigned cap = s->cap_dirty == 0 ? 16 : s->cap_dirty * 2;
        struct rio **d = kappa_realloc(s->dirty, cap * sizeof *d);
        if (d == NULL) {
            return KAPPA_ENOMEM;
        }
        s->dirty = d;
        s->cap_dirty = cap;
    }
    if (n > s->cap_round) {
        unsigned cap = s->cap_round == 0 ? 16 : s->cap_round * 2;
        struct rio_round_item *r = kappa_realloc(s->round, cap * sizeof *r);
        if (r == NULL) {
            return KAPPA_ENOMEM;
        }
        s->round = r;
        s->cap_round = cap;
    }
    s->n_rios = n;
    return 0;
}

static void syncer_execute(uv_work_t *work)
{
    struct rio_syncer *s = work->data;

    for (unsigned i = 0; i < s->n_round; i++) {
        if (s->round[i].prepared == 0) {
            log_sync_execute(&s->round[i].sync);
        }
    }
}

/* Takes one dirty rio into the round being built. */
static void round_add(struct rio_syncer *s, struct rio *rio)
{
    struct rio_round_item *it = &s->round[s->n_round++];

    it->rio = rio;
    rio->is_dirty = false;
    rio->is_in_round = true;
    KAPPA_ASSERT(rio->syncing.head == NULL);
    rio->syncing = rio->pending;
    rio->pending.head = NULL;
    rio->pending.tail = NULL;
    it->prepared =
        rio->is_failed ? KAPPA_EIO : log_sync_prepare(rio->log, &it->sync);
}

static void syncer_after(uv_work_t *work, int uv_status);

static void syncer_prepare_cb(uv_prepare_t *h)
{
    struct rio_syncer *s = h->data;
    int rv;

    uv_prepare_stop(&s->prepare);
    if (s->is_running || s->n_dirty == 0) {
        return;
    }
    KAPPA_ASSERT(s->n_dirty <= s->cap_round);
    for (unsigned i = 0; i < s->n_dirty; i++) {
        round_add(s, s->dirty[i]);
    }
    s->n_dirty = 0;
    s->is_running = true;
    rv = uv_queue_work(s->loop, &s->work, syncer_execute, syncer_after);
    KAPPA_ASSERT(rv == 0);
}

/* Completes one rio's part of the round and fires its callbacks. */
static void round_complete_one(struct rio_syncer *s, struct rio_round_item *it)
{
    struct rio *rio = it->rio;
    struct rio_append *a;
    int status = 0;

    if (it->prepared == 0) {
        log_sync_complete(rio->log, &it->sync);
        s->n_syncs++;
        if (it->sync.rv != 0) {
            rio_fail(rio, "fdatasync", kappa_err_str(it->sync.rv));
            status = RAFT_IOERR;
        }
    } else if (it->prepared != 1) {
        rio_fail(rio, "sync", kappa_err_str(it->prepared));
        status = RAFT_IOERR;
    }
    rio->is_in_round = false;
    a = fifo_take_all(&rio->syncing);
    while (a != NULL) {
        struct rio_append *next = a->next;
        struct raft_io_append *req = a->req;
        int st = a->status != 0 ? a->status : status;
        rio->n_appends--;
        kappa_free(a);
        if (req->cb != NULL) {
            req->cb(req, st);
        }
        a = next;
    }
    /* Last: the close callback may free the rio. */
    maybe_finish_close(rio);
}

static void syncer_after(uv_work_t *work, int uv_status)
{
    struct rio_syncer *s = work->data;

    KAPPA_ASSERT(uv_status == 0);
    s->n_rounds++;
    for (unsigned i = 0; i < s->n_round; i++) {
        round_complete_one(s, &s->round[i]);
    }
    s->n_round = 0;
    s->is_running = false;
    if (s->n_dirty > 0 && !s->is_closing) {
        uv_prepare_start(&s->prepare, syncer_prepare_cb);
    }
    syncer_maybe_finish_close(s);
}

static void syncer_mark_dirty(struct rio *rio)
{
    struct rio_syncer *s = rio->syncer;

    if (rio->is_dirty) {
        return;
    }
    KAPPA_ASSERT(s->n_dirty < s->cap_dirty);
    s->dirty[s->n_dirty++] = rio;
    rio->is_dirty = true;
    if (!s->is_running) {
        uv_prepare_start(&s->prepare, syncer_prepare_cb);
    }
}

/* ---- append ------------------------------------------------------------ */

/* Checks entries against the tail; *n_offsets gets the offsets after. */
static int append_check(struct rio *rio, const struct raft_entry *entries,
                        unsigned n, int64_t *end_offset)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int64_t next = rio->tail.next_offset;

    for (unsigned i = 0; i < n; i++) {
        int rv =
            rio_entry_check(&entries[i], rio->is_wrapped, next, &next, errmsg);
        if (rv != 0) {
            kappa_errmsg_printf(rio->io->errmsg, "append entry %u: %s", i,
                                errmsg);
            return rv == KAPPA_ETOOBIG ? RAFT_TOOBIG : RAFT_INVALID;
        }
    }
    *end_offset = next;
    return 0;
}

/* Records the checked entries in the tail (reserved by the caller). */
static void append_record(struct rio *rio, const struct raft_entry *entries,
                          unsigned n)
{
    char errmsg[KAPPA_ERRMSG_SIZE];

    for (unsigned i = 0; i < n; i++) {
        int64_t offset = rio->tail.next_offset;
        int64_t next;
        int rv = rio_entry_check(&entries[i], rio->is_wrapped, offset, &next,
                                 errmsg);
        KAPPA_ASSERT(rv == 0);
        tail_push(&rio->tail, offset, entries[i].term, next);
    }
}

static int flush_scratch(struct rio *rio)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv;

    if (rio->scratch.len == 0) {
        return 0;
    }
    rv = log_append_exact(rio->log, rio->scratch.data, rio->scratch.len,
                          wall_ms(), errmsg);
    rio->scratch.len = 0;
    if (rv != 0) {
        rio_fail(rio, "append", errmsg);
        return RAFT_IOERR;
    }
    return 0;
}

/* Encodes and writes the entries of a (checked, recorded) request. */
static int append_write(struct rio *rio, struct rio_append *a)
{
    int64_t offset = a->base_offset;
    int rv = 0;

    if (rio->is_failed) {
        return RAFT_IOERR;
    }
    rio->scratch.len = 0;
    for (unsigned i = 0; rv == 0 && i < a->n; i++) {
        char errmsg[KAPPA_ERRMSG_SIZE];
        int64_t next;
        rv = rio_entry_check(&a->entries[i], rio->is_wrapped, offset, &next,
                             errmsg);
        if (rv == 0) {
            rv = rio_entry_encode(&rio->scratch, &rio->builder, &a->entries[i],
                                  rio->is_wrapped, offset);
            kappa_errmsg_printf(errmsg, "%s", kappa_err_str(rv));
        }
        if (rv != 0) {
            rio_fail(rio, "encode", errmsg);
            rv = RAFT_IOERR;
            break;
        }
        offset = next;
        if (rio->scratch.len >= RIO_WRITE_CHUNK_BYTES) {
            rv = flush_scratch(rio);
        }
    }
    if (rv == 0) {
        rv = flush_scratch(rio);
    }
    if (rio->scratch.cap > RIO_SCRATCH_KEEP_BYTES) {
        buf_free(&rio->scratch);
    }
    return rv;
}

/* Writes a request and queues it for the next round. */
static void append_submit(struct rio *rio, struct rio_append *a)
{
    if (a->status == 0) {
        a->status = append_write(rio, a);
    }
    fifo_push(&rio->pending, a);
    syncer_mark_dirty(rio);
}

static int io_append(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n,
                     raft_io_append_cb cb)
{
    struct rio *rio = io->impl;
    struct rio_append *a;
    int64_t end_offset;
    int rv;

    if (rio->is_closing) {
        return RAFT_CANCELED;
    }
    if (n == 0 || rio->n_appends >= RIO_APPENDS_MAX) {
        return n == 0 ? RAFT_INVALID : RAFT_TOOMANY;
    }
    if (!rio->is_failed) {
        rv = append_check(rio, entries, n, &end_offset);
        if (rv == 0 && tail_reserve(&rio->tail, n) != 0) {
            rv = RAFT_NOMEM;
        }
        if (rv != 0) {
            return rv;
        }
    }
    a = kappa_calloc(1, sizeof *a);
    if (a == NULL) {
        return RAFT_NOMEM;
    }
    a->req = req;
    a->entries = entries;
    a->n = n;
    a->base_offset = rio->tail.next_offset;
    a->status = rio->is_failed ? RAFT_IOERR : 0;
    req->cb = cb;
    rio->n_appends++;
    if (a->status == 0) {
        append_record(rio, entries, n);
        KAPPA_ASSERT(rio->tail.next_offset == end_offset);
    }
    if (rio->is_installing) {
        fifo_push(&rio->blocked, a);
        return 0;
    }
    append_submit(rio, a);
    return 0;
}

/* After an install: writes (or fails) what waited for it. */
static void release_blocked(struct rio *rio)
{
    struct rio_append *a = fifo_take_all(&rio->blocked);

    while (a != NULL) {
        struct rio_append *next = a->next;
        if (rio->is_failed && a->status == 0) {
            a->status = RAFT_IOERR;
        }
        append_submit(rio, a);
        a = next;
    }
}

int64_t rio_next_offset(struct raft_io *io)
{
    const struct rio *rio = io->impl;

    return rio->tail.next_offset;
}

/* ---- truncate, term and vote ------------------------------------------ */

static int io_truncate(struct raft_io *io, raft_index index)
{
    struct rio *rio = io->impl;
    char errmsg[KAPPA_ERRMSG_SIZE];
    int64_t offset;
    int rv;

    if (rio->is_failed || rio->is_installing || rio->is_closing) {
        rio_errmsg(rio, rio->is_failed ? "rio failed earlier"
                                       : "truncate while busy");
        return RAFT_IOERR;
    }
    if (index < rio->tail.first_index) {
        kappa_errmsg_printf(
            io->errmsg, "truncate at %" PRIu64 " below first index %" PRIu64,
            (uint64_t)index, rio->tail.first_index);
        return RAFT_IOERR;
    }
    if (!tail_has(&rio->tail, index)) {
        return 0; /* nothing at or after index */
    }
    offset = tail_at(&rio->tail, index)->offset;
    rv = log_truncate(rio->log, offset, errmsg);
    if (rv != 0) {
        rio_fail(rio, "truncate", errmsg);
        return RAFT_IOERR;
    }
    rio->tail.n = index - rio->tail.first_index;
    rio->tail.next_offset = offset;
    return 0;
}

static int meta_store(struct rio *rio, struct rio_meta next)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv;

    if (rio->is_failed) {
        rio_errmsg(rio, "rio failed earlier");
        return RAFT_IOERR;
    }
    next.version = rio->meta.version + 1;
    rv = rio_meta_store(rio->dir, &next, errmsg);
    if (rv != 0) {
        rio_fail(rio, "store term and vote", errmsg);
        return rv == KAPPA_ENOSPC ? RAFT_NOSPACE : RAFT_IOERR;
    }
    rio->meta = next;
    return 0;
}

static int io_set_term(struct raft_io *io, raft_term term)
{
    struct rio *rio = io->impl;
    struct rio_meta next = {.term = term, .vote = 0};

    return meta_store(rio, next);
}

static int io_set_vote(struct raft_io *io, raft_id server_id)
{
    struct rio *rio = io->impl;
    struct rio_meta next = {.term = rio->meta.term, .vote = server_id};

    return meta_store(rio, next);
}

/* ---- load, bootstrap, recover ------------------------------------------ */

/* What load found, before it is handed to raft. */
struct loaded {
    struct raft_snapshot *snapshot;
    struct rio_snap_header h;
    struct raft_entry *entries;
    size_t n_entries;
    size_t cap_entries;
};

static void entries_free(struct raft_entry *entries, size_t n)
{
    void *batch = NULL;

    for (size_t i = 0; i < n; i++) {
        if (entries[i].batch != batch) {
            batch = entries[i].batch;
            raft_free(batch);
        }
    }
    raft_free(entries);
}

static void snapshot_free(struct raft_snapshot *s)
{
    if (s == NULL) {
        return;
    }
    raft_configuration_close(&s->configuration);
    for (unsigned i = 0; i < s->n_bufs; i++) {
        raft_free(s->bufs[i].base);
    }
    raft_free(s->bufs);
    raft_free(s);
}

static void loaded_free(struct loaded *ld)
{
    snapshot_free(ld->snapshot);
    ld->snapshot = NULL;
    entries_free(ld->entries, ld->n_entries);
    ld->entries = NULL;
    ld->n_entries = 0;
}

/* Builds the raft snapshot from a parsed image: the FSM bytes only, in a
 * buffer of their own (raft hands it to fsm->restore, which frees it). */
static int snapshot_from_image(const uint8_t *p,
                               const struct rio_snap_header *h,
                               const struct raft_configuration *conf,
                               struct raft_snapshot **out)
{
    struct raft_snapshot *s = raft_calloc(1, sizeof *s);
    size_t data_pos = RIO_SNAP_HEADER_BYTES + h->conf_bytes;

    if (s == NULL) {
        return RAFT_NOMEM;
    }
    s->bufs = raft_calloc(1, sizeof *s->bufs);
    if (s->bufs != NULL) {
        s->bufs[0].base = raft_malloc(h->data_bytes > 0 ? h->data_bytes : 1);
    }
    if (s->bufs == NULL || s->bufs[0].base == NULL) {
        raft_free(s->bufs);
        raft_free(s);
        return RAFT_NOMEM;
    }
    memcpy(s->bufs[0].base, p + data_pos, h->data_bytes);
    s->bufs[0].len = h->data_bytes;
    s->n_bufs = 1;
    s->index = h->index;
    s->term = h->term;
    s->configuration_index = h->conf_index;
    s->configuration = *conf;
    *out = s;
    return 0;
}

/* Reads the newest valid snapshot, if any; a damaged newest one is skipped
 * (logged) for the one before it. */
static int load_snapshot(struct rio *rio, struct loaded *ld)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct rio_snap_id ids[2];
    unsigned n;
    int rv = rio_snap_list(rio->dir, ids, &n, errmsg);

    if (rv != 0) {
        rio_errmsg(rio, errmsg);
        return RAFT_IOERR;
    }
    for (unsigned i = 0; i < n; i++) {
        struct raft_configuration conf;
        uint8_t *p = NULL;
        size_t len = 0;
        rv = rio_snap_read(rio->dir, &ids[i], &p, &len, errmsg);
        if (rv == KAPPA_ENOMEM || rv == KAPPA_EIO) {
            rio_errmsg(rio, errmsg);
            return rv == KAPPA_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
        }
        if (rv == 0) {
            rv = rio_snap_parse(p, len, &ld->h, &conf);
        }
        if (rv == 0 &&
            (ld->h.index != ids[i].index || ld->h.term != ids[i].term)) {
            raft_configuration_close(&conf);
            rv = KAPPA_ECORRUPT;
        }
        if (rv == 0) {
            rv = snapshot_from_image(p, &ld->h, &conf, &ld->snapshot);
            if (rv != 0) {
                raft_configuration_close(&conf);
            }
            raft_free(p);
            if (rv == 0) {
                rio->has_snapshot = true;
                rio->snapshot = ids[i];
            }
            return rv;
        }
        raft_free(p);
        kappa_log(KAPPA_LOG_WARN, "rio",
                  "group %" PRIu64 ": snapshot %" PRIu64 "/%" PRIu64
                  " is damaged; trying an older one",
                  rio->group_id, ids[i].term, ids[i].index);
    }
    if (n > 0) {
        rio_errmsg(rio, "no valid snapshot");
        return RAFT_CORRUPT;
    }
    return 0;
}

static int entries_reserve(struct loaded *ld, size_t extra)
{
    size_t cap = ld->cap_entries == 0 ? 256 : ld->cap_entries;
    struct raft_entry *v;

    if (ld->n_entries + extra <= ld->cap_entries) {
        return 0;
    }
    while (cap < ld->n_entries + extra) {
        cap *= 2;
    }
    v = raft_realloc(ld->entries, cap * sizeof *v);
    if (v == NULL) {
        return RAFT_NOMEM;
    }
    ld->entries = v;
    ld->cap_entries = cap;
    return 0;
}

/* Reads whole batches at offset into a new raft_malloc'd chunk sized to
 * fit (*chunk, *n; *n == 0 at the end of the store). */
static int read_chunk(struct rio *rio, int64_t offset, uint8_t **chunk,
                      size_t *n)
{
    size_t cap = RIO_LOAD_CHUNK_BYTES;
    uint8_t *p = raft_malloc(cap);
    int rv;

    *chunk = NULL;
    *n = 0;
    if (p == NULL) {
        return RAFT_NOMEM;
    }
    rv = log_read(rio->log, offset, INT64_MAX, cap, p, cap, n);
    if (rv == KAPPA_ETOOBIG) {
        uint32_t bytes;
        uint8_t *q;
        rv = log_batch_bytes_at(rio->log, offset, &bytes);
        q = rv == 0 ? raft_realloc(p, bytes) : p;
        if (q == NULL) {
            raft_free(p);
            return RAFT_NOMEM;
        }
        p = q;
        if (rv == 0) {
            rv = log_read(rio->log, offset, INT64_MAX, bytes, p, bytes, n);
        }
    }
    if (rv != 0 || *n == 0) {
        raft_free(p);
        if (rv != 0) {
            kappa_errmsg_printf(rio->io->errmsg,
                                "read store at offset %" PRId64 ": %s", offset,
                                kappa_err_str(rv));
        }
        return rv == 0 ? 0 : rv == KAPPA_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    *chunk = *n < cap ? raft_realloc(p, *n) : p;
    if (*chunk == NULL) {
        *chunk = p; /* shrinking failed: keep the larger block */
    }
    return 0;
}

/* Turns the batches of one chunk into entries (and tail positions). */
static int chunk_entries(struct rio *rio, struct loaded *ld, uint8_t *chunk,
                         size_t n)
{
    size_t pos = 0;

    while (pos < n) {
        struct raft_entry *e;
        struct batch_header h;
        int rv = batch_header_decode(chunk + pos, n - pos, &h);
        if (rv != 0 || h.base_offset != rio->tail.next_offset) {
            kappa_errmsg_printf(rio->io->errmsg,
                                "store batch at offset %" PRId64
                                " is not an entry",
                                rio->tail.next_offset);
            return RAFT_CORRUPT;
        }
        rv = entries_reserve(ld, 1);
        if (rv == 0 && tail_reserve(&rio->tail, 1) != 0) {
            rv = RAFT_NOMEM;
        }
        if (rv != 0) {
            return rv;
        }
        e = &ld->entries[ld->n_entries];
        if (rio_entry_decode(chunk + pos, &h, rio->is_wrapped, e) != 0) {
            kappa_errmsg_printf(rio->io->errmsg,
                                "store batch at offset %" PRId64
                                " is not an entry",
                                h.base_offset);
            return RAFT_CORRUPT;
        }
        e->batch = chunk;
        ld->n_entries++;
        tail_push(&rio->tail, h.base_offset, h.term,
                  h.base_offset + (int64_t)h.record_count);
        pos += h.batch_bytes;
    }
    return 0;
}

/* Walks the store from the tail's next offset to its end. */
static int load_entries(struct rio *rio, struct loaded *ld)
{
    for (;;) {
        uint8_t *chunk;
        size_t n;
        size_t first = ld->n_entries;
        int rv = read_chunk(rio, rio->tail.next_offset, &chunk, &n);
        if (rv != 0 || n == 0) {
            return rv;
        }
        rv = chunk_entries(rio, ld, chunk, n);
        if (rv != 0) {
            /* Entries of this chunk, if any, are freed with it. */
            if (ld->n_entries == first) {
                raft_free(chunk);
            }
            return rv;
        }
    }
}

/* Whether a batch of the store begins at offset (< end). */
static int is_batch_start(struct rio *rio, int64_t offset, bool *yes)
{
    uint32_t bytes;
    uint8_t *p;
    size_t n;
    int rv = log_batch_bytes_at(rio->log, offset, &bytes);

    if (rv != 0) {
        return rv;
    }
    p = kappa_malloc(bytes);
    if (p == NULL) {
        return KAPPA_ENOMEM;
    }
    rv = log_read(rio->log, offset, INT64_MAX, bytes, p, bytes, &n);
    *yes = rv == 0 && n >= KAPPA_BATCH_HEADER_BYTES &&
           batch_base_offset(p) == offset;
    kappa_free(p);
    return rv;
}

/* Where the walk starts: the snapshot's end offset, or 0 without one. A
 * store that does not line up with the snapshot (shorter, or no batch
 * starting there) is what an install interrupted between writing the
 * manifest and resetting the store leaves: the reset is done now. */
static int load_start(struct rio *rio, const struct loaded *ld)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    int64_t start = log_start_offset(rio->log);
    int64_t end = log_end_offset(rio->log);
    int64_t from = ld->snapshot != NULL ? ld->h.end_offset : 0;
    bool is_aligned = from == end;
    int rv = 0;

    if (from < start) {
        kappa_errmsg_printf(
            rio->io->errmsg,
            "store starts at offset %" PRId64 ", after %" PRId64, start, from);
        return RAFT_CORRUPT;
    }
    if (from < end) {
        rv = is_batch_start(rio, from, &is_aligned);
    }
    if (rv == 0 && !is_aligned) {
        kappa_log(KAPPA_LOG_WARN, "rio",
                  "group %" PRIu64 ": store [%" PRId64 ", %" PRId64
                  ") does not line up with the snapshot ending at %" PRId64
                  "; finishing its install",
                  rio->group_id, start, end, from);
        rv = log_reset(rio->log, from, errmsg);
    }
    if (rv != 0) {
        kappa_errmsg_printf(rio->io->errmsg, "line up store with snapshot: %s",
                            kappa_err_str(rv));
        return rv == KAPPA_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    tail_reset(&rio->tail, ld->snapshot != NULL ? ld->h.index + 1 : 1, from);
    return 0;
}

static int load_all(struct rio *rio, struct loaded *ld)
{
    int rv;

    memset(ld, 0, sizeof *ld);
    rio->has_snapshot = false;
    rv = load_snapshot(rio, ld);
    if (rv == 0) {
        rv = load_start(rio, ld);
    }
    if (rv == 0) {
        rv = load_entries(rio, ld);
    }
    /* raft requires index 1 to be a configuration (src/start.c). */
    if (rv == 0 && ld->snapshot == NULL && ld->n_entries > 0 &&
        ld->entries[0].type != RAFT_CHANGE) {
        rio_errmsg(rio, "first entry is not a configuration");
        rv = RAFT_CORRUPT;
    }
    if (rv != 0) {
        loaded_free(ld);
        tail_reset(&rio->tail, 1, 0);
    }
    return rv;
}

static int io_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                   struct raft_snapshot **snapshot, raft_index *start_index,
                   struct raft_entry *entries[], size_t *n_entries)
{
    struct rio *rio = io->impl;
    struct loaded ld;
    int rv = load_all(rio, &ld);

    if (rv != 0) {
        return rv;
    }
    *term = rio->meta.term;
    *voted_for = rio->meta.vote;
    *snapshot = ld.snapshot;
    *start_index = rio->tail.first_index;
    *entries = ld.n_entries > 0 ? ld.entries : NULL;
    *n_entries = ld.n_entries;
    if (ld.n_entries == 0) {
        raft_free(ld.entries);
    }
    kappa_log(KAPPA_LOG_INFO, "rio",
              "group %" PRIu64 ": loaded term %" PRIu64 ", snapshot %" PRIu64
              ", entries [%" PRIu64 ", %" PRIu64 "], offsets [%" PRId64
              ", %" PRId64 ")",
              rio->group_id, rio->meta.term,
              ld.snapshot != NULL ? ld.h.index : 0, rio->tail.first_index,
              rio->tail.first_index + rio->tail.n - 1,
              log_start_offset(rio->log), rio->tail.next_offset);
    return 0;
}

/* Writes one configuration entry at the end of the store and syncs it. */
/* raft 0.15 pads an encoded configuration to 8 bytes and leaves the padding
 * uninitialised. Every voter writes the bootstrap entry itself, so the
 * replicas' bytes (and CRCs) at offset 0 would differ: zero the padding.
 * The layout is raft's: version u8, n u64, then per server id u64, address
 * NUL-terminated, role u8. */
static void zero_configuration_padding(const struct raft_configuration *conf,
                                       struct raft_buffer *buf)
{
    size_t used = 1 + 8;
    for (unsigned i = 0; i < conf->n; i++) {
        used += 8 + strlen(conf->servers[i].address) + 1 + 1;
    }
    if (used < buf->len) {
        memset((uint8_t *)buf->base + used, 0, buf->len - used);
    }
}

static int write_configuration(struct rio *rio,
                               const struct raft_configuration *conf,
                               raft_term term)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct raft_entry e = {.term = term, .type = RAFT_CHANGE};
    int64_t next;
    int rv = raft_configuration_encode(conf, &e.buf);

    if (rv != 0) {
        return rv;
    }
    zero_configuration_padding(conf, &e.buf);
    rv = rio_entry_check(&e, rio->is_wrapped, rio->tail.next_offset, &next,
                         errmsg);
    rio->scratch.len = 0;
    if (rv == 0) {
        rv = rio_entry_encode(&rio->scratch, &rio->builder, &e, rio->is_wrapped,
                              rio->tail.next_offset);
    }
    if (rv == 0) {
        rv = log_append_exact(rio->log, rio->scratch.data, rio->scratch.len,
                              wall_ms(), errmsg);
    }
    if (rv == 0) {
        rv = log_sync_now(rio->log);
    }
    rio->scratch.len = 0;
    raft_free(e.buf.base);
    if (rv != 0) {
        rio_fail(rio, "write configuration",
                 errmsg[0] != '\0' ? errmsg : kappa_err_str(rv));
        return RAFT_IOERR;
    }
    return 0;
}

static int io_bootstrap(struct raft_io *io,
                        const struct raft_configuration *conf)
{
    struct rio *rio = io->impl;
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct rio_snap_id ids[2];
    unsigned n_snapshots = 0;
    struct rio_meta first = {.term = 1, .vote = 0};
    int rv;

    if (rio_snap_list(rio->dir, ids, &n_snapshots, errmsg) != 0) {
        rio_errmsg(rio, errmsg);
        return RAFT_IOERR;
    }
    if (rio->meta.term != 0 || n_snapshots > 0 ||
        log_end_offset(rio->log) != 0 || log_start_offset(rio->log) != 0) {
        rio_errmsg(rio, "group has state already");
        return RAFT_CANTBOOTSTRAP;
    }
    /* Term first, as raft_uv: a crash in between leaves a group that
     * refuses a second bootstrap rather than one with a stray entry. */
    rv = meta_store(rio, first);
    if (rv == 0) {
        tail_reset(&rio->tail, 1, 0);
        rv = write_configuration(rio, conf, 1);
    }
    return rv;
}

/* Forces a configuration after quorum loss (raft.h's raft_recover): a new
 * configuration entry after the last one, with the last entry's term. */
static int io_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rio *rio = io->impl;
    struct loaded ld;
    raft_term term;
    int rv = load_all(rio, &ld);

    if (rv != 0) {
        return rv;
    }
    term = ld.n_entries > 0      ? ld.entries[ld.n_entries - 1].term
           : ld.snapshot != NULL ? ld.snapshot->term
                                 : 1;
    loaded_free(&ld);
    return write_configuration(rio, conf, term);
}

/* ---- snapshots and async work (threadpool) ----------------------------- */

static void op_free(struct rio_op *op)
{
    buf_free(&op->prefix);
    raft_free(op->image);
    kappa_free(op);
}

static void op_work(uv_work_t *work)
{
    struct rio_op *op = work->data;
    struct rio *rio = op->rio;
    int rv;

    if (op->status != 0) {
        return; /* failed before it was queued: only the callback is left */
    }
    switch (op->kind) {
    case RIO_OP_PUT:
        rv = rio_snap_write(rio->dir, &op->id, &op->prefix, op->bufs,
                            op->n_bufs, op->errmsg);
        if (rv == 0) {
            rv = rio_snap_prune(rio->dir, op->errmsg);
        }
        op->status = rv == 0 ? 0 : RAFT_IOERR;
        break;
    case RIO_OP_GET:
        rv = rio_snap_read(rio->dir, &op->id, &op->image, &op->image_bytes,
                           op->errmsg);
        op->status = rv == 0                ? 0
                     : rv == KAPPA_ENOMEM   ? RAFT_NOMEM
                     : rv == KAPPA_ECORRUPT ? RAFT_CORRUPT
                                            : RAFT_IOERR;
        break;
    case RIO_OP_WORK:
        op->status = op->async->work(op->async);
        break;
    }
}

/* On the loop, after a put's file is durable. */
static void put_done(struct rio *rio, struct rio_op *op)
{
    if (op->status == 0 && op->trailing == 0) {
        int rv = log_reset(rio->log, op->h.end_offset, op->errmsg);
        if (rv != 0) {
            op->status = RAFT_IOERR;
        }
    }
    if (op->status == 0) {
        rio->has_snapshot = true;
        rio->snapshot = op->id;
        if (op->trailing > 0) {
            tail_drop_through(&rio->tail, op->h.index);
        }
    } else if (op->trailing == 0 || op->status == RAFT_IOERR) {
        /* raft already forgot its log for the install; rio's tail was
         * restarted: nothing on disk matches any more. */
        rio_fail(rio, "snapshot put", op->errmsg);
    }
    if (op->trailing == 0) {
        rio->is_installing = false;
        release_blocked(rio);
    }
}

/* Builds the snapshot raft asked for from the file's bytes. */
static int get_done(struct rio_op *op, struct raft_snapshot **out)
{
    struct raft_configuration conf;
    struct rio_snap_header h;
    struct raft_snapshot *s;

    if (rio_snap_parse(op->image, op->image_bytes, &h, &conf) != 0) {
        kappa_errmsg_printf(op->errmsg, "snapshot %" PRIu64 " is damaged",
                            op->id.index);
        return RAFT_CORRUPT;
    }
    s = raft_calloc(1, sizeof *s);
    if (s != NULL) {
        s->bufs = raft_calloc(1, sizeof *s->bufs);
    }
    if (s == NULL || s->bufs == NULL) {
        raft_configuration_close(&conf);
        raft_free(s);
        return RAFT_NOMEM;
    }
    s->index = h.index;
    s->term = h.term;
    s->configuration = conf;
    s->configuration_index = h.conf_index;
    s->bufs[0].base = op->image;
    s->bufs[0].len = op->image_bytes;
    s->n_bufs = 1;
    op->image = NULL;
    *out = s;
    return 0;
}

static void op_after(uv_work_t *work, int uv_status)
{
    struct rio_op *op = work->data;
    struct rio *rio = op->rio;
    struct raft_snapshot *s = NULL;

    KAPPA_ASSERT(uv_status == 0);
    rio->n_ops--;
    switch (op->kind) {
    case RIO_OP_PUT:
        put_done(rio, op);
        op->put->cb(op->put, op->status);
        break;
    case RIO_OP_GET:
        if (op->status == 0) {
            op->status = get_done(op, &s);
        }
        if (op->status != 0) {
            rio_errmsg(rio, op->errmsg);
        }
        op->get->cb(op->get, s, op->status);
        break;
    case RIO_OP_WORK:
        op->async->cb(op->async, op->status);
        break;
    }
    op_free(op);
    maybe_finish_close(rio);
}

static int op_queue(struct rio *rio, struct rio_op *op)
{
    op->rio = rio;
    op->work.data = op;
    if (uv_queue_work(rio->loop, &op->work, op_work, op_after) != 0) {
        return RAFT_IOERR;
    }
    rio->n_ops++;
    return 0;
}

/* InstallSnapshot: checks the image the leader sent, moves the FSM bytes to
 * the start of the buffer for fsm->restore, restarts the tail at the
 * manifest, and blocks appends until the store is reset. */
static int put_install(struct rio *rio, struct rio_op *op)
{
    struct raft_buffer *buf = &op->snapshot->bufs[0];
    size_t data_pos;

    if (op->snapshot->n_bufs != 1 ||
        rio_snap_parse(buf->base, buf->len, &op->h, NULL) != 0 ||
        op->h.index != op->snapshot->index ||
        op->h.term != op->snapshot->term) {
        kappa_errmsg_printf(op->errmsg,
                            "InstallSnapshot %" PRIu64
                            " carries no valid rio manifest",
                            (uint64_t)op->snapshot->index);
        return RAFT_CORRUPT;
    }
    data_pos = RIO_SNAP_HEADER_BYTES + op->h.conf_bytes;
    memmove(buf->base, (uint8_t *)buf->base + data_pos, op->h.data_bytes);
    buf->len = op->h.data_bytes;
    rio->is_installing = true;
    tail_reset(&rio->tail, op->snapshot->index + 1, op->h.end_offset);
    return 0;
}

/* A local snapshot: its end offset comes from the tail. */
static int put_local(struct rio *rio, struct rio_op *op)
{
    uint64_t index = op->snapshot->index;

    if (!tail_has(&rio->tail, index) ||
        tail_at(&rio->tail, index)->term != op->snapshot->term) {
        kappa_errmsg_printf(op->errmsg,
                            "snapshot at %" PRIu64 " not in the log [%" PRIu64
                            ", %" PRIu64 "]",
                            (uint64_t)index, rio->tail.first_index,
                            tail_last_index(&rio->tail));
        return RAFT_IOERR;
    }
    op->h.end_offset = tail_end_of(&rio->tail, index);
    return 0;
}

static int io_snapshot_put(struct raft_io *io, unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb)
{
    struct rio *rio = io->impl;
    struct rio_op *op;
    int rv;

    if (rio->is_closing) {
        return RAFT_CANCELED;
    }
    op = kappa_calloc(1, sizeof *op);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->kind = RIO_OP_PUT;
    op->put = req;
    op->snapshot = snapshot;
    op->trailing = trailing;
    op->id.term = snapshot->term;
    op->id.index = snapshot->index;
    req->cb = cb;
    if (rio->is_failed) {
        op->status = RAFT_IOERR;
        kappa_errmsg_printf(op->errmsg, "rio failed earlier");
    } else {
        op->status = trailing == 0 ? put_install(rio, op) : put_local(rio, op);
    }
    if (op->status == 0) {
        op->h.index = snapshot->index;
        op->h.term = snapshot->term;
        op->h.conf_index = snapshot->configuration_index;
        op->bufs = snapshot->bufs;
        op->n_bufs = snapshot->n_bufs;
        rv = rio_snap_prefix(&op->prefix, &op->h, &snapshot->configuration,
                             op->bufs, op->n_bufs);
        if (rv != 0) {
            kappa_errmsg_printf(op->errmsg, "snapshot: %s", kappa_err_str(rv));
            op->status = rv == KAPPA_ENOMEM ? RAFT_NOMEM : RAFT_TOOBIG;
        }
    }
    rv = op_queue(rio, op);
    if (rv != 0) {
        if (trailing == 0 && rio->is_installing) {
            rio->is_installing = false;
            rio_fail(rio, "snapshot put", "cannot queue work");
        }
        op_free(op);
    }
    return rv;
}

static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    struct rio *rio = io->impl;
    struct rio_op *op;
    int rv;

    if (rio->is_closing || !rio->has_snapshot) {
        return rio->is_closing ? RAFT_CANCELED : RAFT_NOTFOUND;
    }
    op = kappa_calloc(1, sizeof *op);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->kind = RIO_OP_GET;
    op->get = req;
    op->id = rio->snapshot;
    req->cb = cb;
    rv = op_queue(rio, op);
    if (rv != 0) {
        op_free(op);
    }
    return rv;
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req,
                         raft_io_async_work_cb cb)
{
    struct rio *rio = io->impl;
    struct rio_op *op;
    int rv;

    if (rio->is_closing) {
        return RAFT_CANCELED;
    }
    op = kappa_calloc(1, sizeof *op);
    if (op == NULL) {
        return RAFT_NOMEM;
    }
    op->kind = RIO_OP_WORK;
    op->async = req;
    req->cb = cb;
    rv = op_queue(rio, op);
    if (rv != 0) {
        op_free(op);
    }
    return rv;
}

/* ---- messages ------------------------------------------------------------ */

static void send_cb(struct raft_io_send *req, int status)
{
    struct rio_send *s = (struct rio_send *)req;
    struct rio *rio = s->rio;
    struct raft_io_send *outer = s->outer;

    rio->n_sends--;
    kappa_free(s);
    if (outer->cb != NULL) {
        outer->cb(outer, status);
    }
    maybe_finish_close(rio);
}

static int io_send(struct raft_io *io, struct raft_io_send *req,
                   const struct raft_message *m, raft_io_send_cb cb)
{
    struct rio *rio = io->impl;
    struct rio_send *s;
    int rv;

    if (rio->is_closing) {
        return RAFT_CANCELED;
    }
    if (rio->n_sends >= RIO_SENDS_MAX) {
        return RAFT_NOCONNECTION;
    }
    s = kappa_calloc(1, sizeof *s);
    if (s == NULL) {
        return RAFT_NOMEM;
    }
    s->rio = rio;
    s->outer = req;
    req->cb = cb;
    rv = rio->sender.send(rio->sender.data, rio->group_id, &s->req, m, send_cb);
    if (rv != 0) {
        kappa_free(s);
        return rv;
    }
    rio->n_sends++;
    return 0;
}

/* Frees what a received message owns (raft 0.15's recvCb does the same
 * for an unavailable server). */
static void message_release(struct raft_message *m)
{
    switch (m->type) {
    case RAFT_IO_APPEND_ENTRIES:
        if (m->append_entries.entries != NULL) {
            entries_free(m->append_entries.entries,
                         m->append_entries.n_entries);
        }
        m->append_entries.entries = NULL;
        m->append_entries.n_entries = 0;
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        m->install_snapshot.data.base = NULL;
        break;
    default:
        break;
    }
}

void rio_deliver(struct raft_io *io, struct raft_message *m)
{
    struct rio *rio = io->impl;

    if (!rio->is_started || rio->is_closing) {
        message_release(m);
        return;
    }
    rio->recv_cb(io, m);
}

/* ---- time, random, start, init, close ---------------------------------- */

static raft_time io_time(struct raft_io *io)
{
    const struct rio *rio = io->impl;

    return uv_now(rio->loop);
}

/* xorshift64* (Vigna); never 0. */
static uint64_t random_next(struct rio *rio)
{
    uint64_t x = rio->random_state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rio->random_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int io_random(struct raft_io *io, int min, int max)
{
    struct rio *rio = io->impl;

    if (max <= min) {
        return min;
    }
    return min + (int)(random_next(rio) % (uint64_t)(max - min));
}

static void tick_cb(uv_timer_t *t)
{
    struct rio *rio = t->data;

    rio->tick_cb(rio->io);
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv)
{
    struct rio *rio = io->impl;

    if (rio->is_started || rio->is_closing) {
        return RAFT_BUSY;
    }
    rio->tick_cb = tick;
    rio->recv_cb = recv;
    if (uv_timer_start(&rio->timer, tick_cb, msecs, msecs) != 0) {
        return RAFT_IOERR;
    }
    rio->is_started = true;
    return 0;
}

/* splitmix64 of the ids, so that nearby ids give unrelated sequences. */
static uint64_t random_seed(uint64_t node_id, uint64_t group_id)
{
    uint64_t z = node_id * 0x9E3779B97F4A7C15ULL + group_id;

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z != 0 ? z : 1;
}

static int io_init(struct raft_io *io, raft_id id, const char *address)
{
    struct rio *rio = io->impl;
    char errmsg[KAPPA_ERRMSG_SIZE];
    int rv;

    (void)address;
    if (rio->is_initialized) {
        return RAFT_BUSY;
    }
    rio->id = id;
    rio->random_state = random_seed(id, rio->group_id);
    rv = rio_meta_load(rio->dir, &rio->meta, errmsg);
    if (rv != 0) {
        rio_errmsg(rio, errmsg);
        return rv == KAPPA_ECORRUPT ? RAFT_CORRUPT : RAFT_IOERR;
    }
    if (syncer_attach(rio->syncer) != 0) {
        return RAFT_NOMEM;
    }
    if (uv_timer_init(rio->loop, &rio->timer) != 0) {
        rio->syncer->n_rios--;
        return RAFT_IOERR;
    }
    rio->timer.data = rio;
    rio->is_initialized = true;
    return 0;
}

static void maybe_finish_close(struct rio *rio)
{
    raft_io_close_cb cb = rio->close_cb;

    if (!rio->is_closing || rio->is_close_fired || !rio->is_timer_closed ||
        rio->n_appends > 0 || rio->is_dirty || rio->is_in_round ||
        rio->n_sends > 0 || rio->n_ops > 0) {
        return;
    }
    rio->is_close_fired = true;
    rio->syncer->n_rios--;
    if (cb != NULL) {
        cb(rio->io); /* may free the rio (rio_close) */
    }
}

static void timer_closed(uv_handle_t *h)
{
    struct rio *rio = h->data;

    rio->is_timer_closed = true;
    maybe_finish_close(rio);
}

static void io_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct rio *rio = io->impl;

    KAPPA_ASSERT(rio->is_initialized);
    KAPPA_ASSERT(!rio->is_closing);
    rio->is_closing = true;
    rio->close_cb = cb;
    uv_close((uv_handle_t *)&rio->timer, timer_closed);
}

int rio_init(struct raft_io *io, uv_loop_t *loop, const struct rio_config *cfg)
{
    struct rio *rio;

    if (cfg->dir == NULL || cfg->log == NULL || cfg->syncer == NULL ||
        cfg->sender.send == NULL) {
        return KAPPA_EINVAL;
    }
    rio = kappa_calloc(1, sizeof *rio);
    if (rio == NULL) {
        return KAPPA_ENOMEM;
    }
    rio->dir = kappa_strdup(cfg->dir);
    if (rio->dir == NULL) {
        kappa_free(rio);
        return KAPPA_ENOMEM;
    }
    rio->io = io;
    rio->loop = loop;
    rio->log = cfg->log;
    rio->group_id = cfg->group_id;
    rio->is_wrapped = cfg->is_wrapped;
    rio->syncer = cfg->syncer;
    rio->sender = cfg->sender;
    tail_reset(&rio->tail, 1, 0);
    batch_builder_init(&rio->builder);
    memset(io, 0, sizeof *io);
    io->version = 2;
    io->impl = rio;
    io->init = io_init;
    io->close = io_close;
    io->load = io_load;
    io->start = io_start;
    io->bootstrap = io_bootstrap;
    io->recover = io_recover;
    io->set_term = io_set_term;
    io->set_vote = io_set_vote;
    io->send = io_send;
    io->append = io_append;
    io->truncate = io_truncate;
    io->snapshot_put = io_snapshot_put;
    io->snapshot_get = io_snapshot_get;
    io->time = io_time;
    io->random = io_random;
    io->async_work = io_async_work;
    return 0;
}

void rio_close(struct raft_io *io)
{
    struct rio *rio = io->impl;

    if (rio == NULL) {
        return;
    }
    /* raft_close must have completed (or raft_init failed or never ran). */
    KAPPA_ASSERT(!rio->is_initialized || rio->is_close_fired);
    buf_free(&rio->scratch);
    batch_builder_free(&rio->builder);
    kappa_free(rio->tail.v);
    kappa_free(rio->dir);
    kappa_free(rio);
    io->impl = NULL;
}
