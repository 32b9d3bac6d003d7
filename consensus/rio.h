/* rio: a canonical/raft 0.15 struct raft_io whose log is a Kappa segment
 * store (broker/store/log.h), so a partition's Raft entries and its
 * records are the same bytes on disk (docs/design.md, decision 1).
 *
 * Loop thread only. One rio per Raft group; every group of a node shares
 * one struct rio_syncer (group commit: one fdatasync round for all logs
 * written since the last round) and one struct rio_sender (the node
 * transport).
 *
 * What raft 0.15 calls, and what rio does:
 *   init       reads raft.meta.1/.2 from dir; arms the tick timer handle.
 *   load       newest valid snap-<term>-<index> (its FSM bytes only), then
 *              every batch of the store from the snapshot's end offset
 *              (offset 0 without one) as entries start_index, ...
 *   bootstrap  needs a pristine group (term 0, empty store, no snapshot):
 *              term 1, then a RAFT_CHANGE control batch at offset 0 with
 *              term 1 (index 1), fdatasynced, as raft_uv does.
 *   recover    a RAFT_CHANGE control batch after the last entry, with the
 *              last entry's term (raft_uv uses term 1), fdatasynced.
 *   set_term / set_vote   fdatasynced meta record (rio_meta.h), on the loop.
 *   append     one log_append_exact per call on the loop (page cache), then
 *              the callback after the syncer's next round covered it.
 *   truncate   log_truncate at the entry's offset (fsynced, on the loop).
 *   snapshot_put  writes the manifest in the threadpool and keeps the last
 *              two; trailing == 0 (InstallSnapshot) then log_reset()s the
 *              store to begin at the manifest's end offset; appends that
 *              arrive meanwhile wait for it.
 *   snapshot_get  the newest manifest's file bytes (header included).
 *   send       through the rio_sender; time is uv_now; random a per-group
 *              xorshift seeded from node id and group id; async_work
 *              (io->version 2) is uv_queue_work.
 *
 * Errors. A store or file error gives the callback RAFT_IOERR (raft 0.15
 * keeps leadership after a failed append and does not truncate its log),
 * and the rio then fails every later append, truncate and snapshot with
 * RAFT_IOERR: the group layer must close the group and reopen it from disk
 * on any RAFT_IOERR. An entry that does not fit the store (a command that
 * is not one batch numbered rio_next_offset() with the entry's term) is
 * refused synchronously with RAFT_INVALID, so raft_apply fails cleanly.
 *
 * Snapshot images. The leader's snapshot_get returns the whole manifest
 * (64-byte rio header, configuration, FSM bytes); that is what travels in
 * InstallSnapshot. The follower's snapshot_put(trailing 0) checks it and
 * moves the FSM bytes to the start of the same buffer (len shrinks), so the
 * fsm->restore that raft calls next sees exactly what fsm->snapshot
 * produced. */
#ifndef KAPPA_CONSENSUS_RIO_H
#define KAPPA_CONSENSUS_RIO_H

#include <raft.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct log;
struct rio;

/* How rio sends a message. The sender (consensus/transport.c in
 * production) must:
 *   - treat *m as valid only during the call (raft may build it on the
 *     stack), while the buffers it points to (entries, snapshot data) stay
 *     valid until cb;
 *   - unless send returns non-zero (a RAFT_* code; cb then never runs),
 *     call cb(req, status) exactly once, never from within send, and
 *     within bounded time: rio's close waits for every outstanding send.
 * A message for this node arrives through rio_deliver. */
struct rio_sender {
    void *data;
    int (*send)(void *data, uint64_t group_id, struct raft_io_send *req,
                const struct raft_message *m, raft_io_send_cb cb);
};

/* Node-wide group commit. One round: on the loop, log_sync_prepare every
 * log written since the last round; in the threadpool, fdatasync them all;
 * back on the loop, complete the syncs and fire every append callback the
 * round covered. Appends made while a round runs go to the next one; a
 * round starts from a uv_prepare handle, so all the appends of one loop
 * iteration share it. The fields are private. */
struct rio_syncer {
    uv_loop_t *loop;
    uv_prepare_t prepare;
    uv_work_t work;
    struct rio **dirty; /* rios with appends for the next round */
    unsigned n_dirty;
    unsigned cap_dirty;
    struct rio_round_item *round; /* the running round's logs */
    unsigned n_round;
    unsigned cap_round;
    unsigned n_rios; /* attached */
    bool is_running;
    bool is_closing;
    bool is_prepare_closed;
    void (*close_cb)(struct rio_syncer *s);
    uint64_t n_rounds; /* statistics, for tests and metrics */
    uint64_t n_syncs;
};

/* Returns 0 or KAPPA_EIO (uv_prepare_init failed). */
int rio_syncer_init(struct rio_syncer *s, uv_loop_t *loop);

/* Closes the handle and calls cb (may be NULL) after it is closed, from the
 * loop. Every rio using it must have closed first (asserted). */
void rio_syncer_close(struct rio_syncer *s, void (*cb)(struct rio_syncer *s));

struct rio_config {
    const char *dir;           /* rio's files: raft.meta.1/.2, snap-*; must
                                  exist; copied */
    struct log *log;           /* the group's store, borrowed: open before
                                  raft_init, untouched by others (reads
                                  aside) until raft_close's callback */
    uint64_t group_id;         /* passed to the sender; seeds random */
    bool is_wrapped;           /* commands are arbitrary bytes (metadata
                                  group), stored as one-record batches */
    struct rio_syncer *syncer; /* borrowed; outlives the rio */
    struct rio_sender sender;  /* copied */
};

/* Fills io's vtable (io->version = 2) and allocates the rio; no I/O until
 * raft_init calls io->init. Returns 0, KAPPA_EINVAL (missing field) or
 * KAPPA_ENOMEM. */
int rio_init(struct raft_io *io, uv_loop_t *loop, const struct rio_config *cfg);

/* Frees the rio: after raft_close's callback, after a failed raft_init, or
 * when raft_init was never called. The log stays open (the caller's). */
void rio_close(struct raft_io *io);

/* Hands a received message to raft (the recv_cb of io->start). Takes
 * ownership of its raft_malloc'd parts per raft 0.15's recv contract: one
 * entries array whose payloads all sit in raft_malloc'd batches with
 * entry.batch set, and for InstallSnapshot a decoded conf and a
 * raft_malloc'd data.base. *m itself and m->server_address are borrowed
 * for the call. Before start and after close it frees those parts. */
void rio_deliver(struct raft_io *io, struct raft_message *m);

/* The offset the next entry will get: the end of every entry appended so
 * far, written or still queued. A leader numbers a command batch with it
 * (and sets its term to raft's current term) right before raft_apply. */
int64_t rio_next_offset(struct raft_io *io);

#endif /* KAPPA_CONSENSUS_RIO_H */
