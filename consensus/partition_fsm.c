/*
 * The partition state machine. Raft calls apply for every RAFT_COMMAND entry
 * in log order on every replica; the entry is a record batch (common/batch.h)
 * whose base offset the leader assigned before proposing it, so apply only
 * checks and advances: the bytes themselves are already in the segment store
 * (the Raft log is the store).
 *
 * Apply result: a value packed into the void * raft hands to the apply
 * callback, so nothing is allocated and nothing must be freed:
 *
 *   (intptr_t)result >= 0   accepted; the batch's base offset
 *   (intptr_t)result <  0   rejected; -(KAPPA_E* code)
 *
 * Manifest (the snapshot; the last index and term are raft's, kept in the
 * snapshot metadata, not here), msgpack:
 *
 *   array(5)
 *     uint  format version, 1
 *     uint  commit_offset     offset after the last batch the snapshot covers
 *                             (the store must end here after install)
 *     uint  n_batches         batches applied since offset 0
 *     any   producer state    see consensus/producer_state.c
 *     bin   blob              the caller's opaque bytes (e.g. segment list),
 *                             0 .. PARTITION_FSM_BLOB_BYTES_MAX
 *
 * Every field is a canonical msgpack integer or a length-prefixed value, so
 * two replicas with equal state produce byte-identical manifests.
 */
#include "partition_fsm.h"

#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/buf.h"
#include "common/crc32c.h"
#include "common/err.h"
#include "common/mp.h"

#define FORMAT_VERSION 1

_Static_assert(sizeof(intptr_t) >= sizeof(int64_t),
               "apply results pack an int64 offset into a pointer");

struct partition_fsm {
    struct raft_fsm fsm;
    int verify_crc;
    int64_t commit_offset;
    uint64_t n_batches;
    struct producer_state *producers;
    uint32_t max_producers;
    uint8_t *blob; /* kappa_malloc'd, NULL when empty */
    size_t blob_len;
    /* Tracking (tests): a window of at most track_max entries that slides
     * through an array of 2 * track_max slots. */
    uint32_t track_max;
    struct partition_applied *applied;
    size_t applied_start;
    size_t applied_len;
};

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result);
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs);
static int fsm_snapshot_finalize(struct raft_fsm *fsm,
                                 struct raft_buffer *bufs[], unsigned *n_bufs);
static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf);

struct partition_fsm *
partition_fsm_new(const struct partition_fsm_options *opts)
{
    struct partition_fsm_options defaults = {0};
    struct partition_fsm *p;

    if (opts == NULL) {
        opts = &defaults;
    }
    if (opts->track_max > PARTITION_FSM_TRACK_MAX) {
        return NULL;
    }
    p = kappa_calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    p->max_producers = opts->max_producers != 0
                           ? opts->max_producers
                           : PRODUCER_STATE_PRODUCERS_DEFAULT;
    p->producers = producer_state_new(p->max_producers);
    if (p->producers == NULL) {
        goto err_after_alloc;
    }
    p->track_max = opts->track_max;
    if (p->track_max > 0) {
        p->applied = kappa_calloc(2 * (size_t)p->track_max, sizeof *p->applied);
        if (p->applied == NULL) {
            goto err_after_producers;
        }
    }
    p->verify_crc = opts->verify_crc;
    p->fsm.version = 2;
    p->fsm.data = p;
    p->fsm.apply = fsm_apply;
    p->fsm.snapshot = fsm_snapshot;
    p->fsm.snapshot_finalize = fsm_snapshot_finalize;
    p->fsm.restore = fsm_restore;
    return p;

err_after_producers:
    producer_state_free(p->producers);
err_after_alloc:
    kappa_free(p);
    return NULL;
}

void partition_fsm_free(struct partition_fsm *p)
{
    if (p == NULL) {
        return;
    }
    producer_state_free(p->producers);
    kappa_free(p->blob);
    kappa_free(p->applied);
    kappa_free(p);
}

struct raft_fsm *partition_fsm_raft(struct partition_fsm *p)
{
    return &p->fsm;
}

static void *pack_result(int code, int64_t base_offset)
{
    if (code != 0) {
        return (void *)(intptr_t)-code;
    }
    KAPPA_ASSERT(base_offset >= 0);
    return (void *)(intptr_t)base_offset;
}

int partition_fsm_result(const void *result, int64_t *base_offset)
{
    intptr_t v = (intptr_t)result;
    if (v < 0) {
        return (int)-v;
    }
    *base_offset = (int64_t)v;
    return 0;
}

int64_t partition_fsm_commit_offset(const struct partition_fsm *p)
{
    return p->commit_offset;
}

uint64_t partition_fsm_n_batches(const struct partition_fsm *p)
{
    return p->n_batches;
}

const struct producer_state *
partition_fsm_producers(const struct partition_fsm *p)
{
    return p->producers;
}

int partition_fsm_set_blob(struct partition_fsm *p, const void *data,
                           size_t len)
{
    uint8_t *copy = NULL;
    if (len > PARTITION_FSM_BLOB_BYTES_MAX) {
        return KAPPA_ETOOBIG;
    }
    if (len > 0) {
        copy = kappa_malloc(len);
        if (copy == NULL) {
            return KAPPA_ENOMEM;
        }
        memcpy(copy, data, len);
    }
    kappa_free(p->blob);
    p->blob = copy;
    p->blob_len = len;
    return 0;
}

const uint8_t *partition_fsm_blob(const struct partition_fsm *p, size_t *len)
{
    *len = p->blob_len;
    return p->blob;
}

const struct partition_applied *
partition_fsm_applied(const struct partition_fsm *p, size_t *n)
{
    *n = p->applied_len;
    return p->applied_len > 0 ? &p->applied[p->applied_start] : NULL;
}

static void track(struct partition_fsm *p, const struct batch_header *h,
                  const struct raft_buffer *buf)
{
    struct partition_applied *a;
    if (p->track_max == 0) {
        return;
    }
    if (p->applied_len == p->track_max) {
        p->applied_start++;
        p->applied_len--;
    }
    if (p->applied_start + p->applied_len == 2 * (size_t)p->track_max) {
        memmove(p->applied, &p->applied[p->applied_start],
                p->applied_len * sizeof *p->applied);
        p->applied_start = 0;
    }
    a = &p->applied[p->applied_start + p->applied_len++];
    a->base_offset = h->base_offset;
    a->record_count = h->record_count;
    a->crc = crc32c(buf->base, buf->len);
}

/* Decodes the header of a record or control batch that must fill the whole
 * entry. Returns 0, KAPPA_ECORRUPT or KAPPA_ECRC; sets *is_control. */
static int check_entry(const struct partition_fsm *p,
                       const struct raft_buffer *buf, struct batch_header *h,
                       int *is_control)
{
    if (batch_header_decode(buf->base, buf->len, h) != 0 ||
        h->batch_bytes != buf->len) {
        return KAPPA_ECORRUPT;
    }
    *is_control = (h->attributes & KAPPA_BATCH_ATTR_CONTROL) != 0;
    if (p->verify_crc && batch_crc_compute(buf->base, buf->len) != h->crc) {
        return KAPPA_ECRC;
    }
    return 0;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct partition_fsm *p = fsm->data;
    struct batch_header h;
    int is_control = 0;
    int rv;

    rv = check_entry(p, buf, &h, &is_control);
    /* A gap is legal: raft 0.15 never hands barrier and configuration
     * entries to apply, yet on rio they are control batches that take an
     * offset. Going backwards is not. */
    if (rv == 0 && h.base_offset < p->commit_offset) {
        rv = KAPPA_ECORRUPT;
    }
    if (rv != 0) {
        *result = pack_result(rv, 0);
        return 0;
    }
    if (!is_control) {
        rv = producer_state_record(p->producers, h.producer_id,
                                   h.producer_epoch, h.base_sequence,
                                   h.record_count, h.base_offset);
        if (rv == KAPPA_ENOMEM) {
            return RAFT_NOMEM;
        }
        /* KAPPA_EINVAL (e.g. producer id -2) is not fatal: the batch is in
         * the log, it just carries no producer state. */
    }
    track(p, &h, buf);
    p->commit_offset = h.base_offset + (int64_t)h.record_count;
    p->n_batches++;
    *result = pack_result(0, h.base_offset);
    return 0;
}

int partition_fsm_encode(const struct partition_fsm *p, struct buf *out)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 5);
    mp_put_uint(&w, FORMAT_VERSION);
    mp_put_uint(&w, (uint64_t)p->commit_offset);
    mp_put_uint(&w, p->n_batches);
    producer_state_encode(p->producers, &w);
    mp_put_bin(&w, p->blob, p->blob_len);
    return w.err;
}

int partition_fsm_decode(struct partition_fsm *p, const void *data, size_t len)
{
    struct producer_state *producers;
    struct mp_reader r;
    const uint8_t *blob;
    uint8_t *blob_copy = NULL;
    uint32_t n, blob_len;
    int64_t version, commit_offset;
    uint64_t n_batches;
    int rv;

    mp_reader_init(&r, data, len);
    if (mp_read_array(&r, &n) != 0 || n != 5 ||
        mp_read_int_range(&r, FORMAT_VERSION, FORMAT_VERSION, &version) != 0 ||
        mp_read_int_range(&r, 0, INT64_MAX, &commit_offset) != 0 ||
        mp_read_uint(&r, &n_batches) != 0) {
        return KAPPA_EPROTO;
    }
    producers = producer_state_new(p->max_producers);
    if (producers == NULL) {
        return KAPPA_ENOMEM;
    }
    rv = producer_state_decode(producers, &r);
    if (rv != 0) {
        goto err_after_producers;
    }
    rv = KAPPA_EPROTO;
    if (mp_read_bin(&r, &blob, &blob_len) != 0 ||
        blob_len > PARTITION_FSM_BLOB_BYTES_MAX || r.p != r.end) {
        goto err_after_producers;
    }
    if (blob_len > 0) {
        blob_copy = kappa_malloc(blob_len);
        if (blob_copy == NULL) {
            rv = KAPPA_ENOMEM;
            goto err_after_producers;
        }
        memcpy(blob_copy, blob, blob_len);
    }
    producer_state_free(p->producers);
    p->producers = producers;
    kappa_free(p->blob);
    p->blob = blob_copy;
    p->blob_len = blob_len;
    p->commit_offset = commit_offset;
    p->n_batches = n_batches;
    p->applied_start = 0;
    p->applied_len = 0;
    return 0;

err_after_producers:
    producer_state_free(producers);
    return rv;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct partition_fsm *p = fsm->data;
    struct buf out = {0};
    struct raft_buffer *b;

    if (partition_fsm_encode(p, &out) != 0) {
        goto err_after_encode;
    }
    b = raft_malloc(sizeof *b);
    if (b == NULL) {
        goto err_after_encode;
    }
    b->len = out.len;
    b->base = raft_malloc(out.len);
    if (b->base == NULL) {
        goto err_after_array;
    }
    memcpy(b->base, out.data, out.len);
    buf_free(&out);
    *bufs = b;
    *n_bufs = 1;
    return 0;

err_after_array:
    raft_free(b);
err_after_encode:
    buf_free(&out);
    return RAFT_NOMEM;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm,
                                 struct raft_buffer *bufs[], unsigned *n_bufs)
{
    (void)fsm;
    for (unsigned i = 0; i < *n_bufs; i++) {
        raft_free((*bufs)[i].base);
    }
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct partition_fsm *p = fsm->data;
    int rv = partition_fsm_decode(p, buf->base, buf->len);
    if (rv == KAPPA_ENOMEM) {
        return RAFT_NOMEM;
    }
    if (rv != 0) {
        return RAFT_CORRUPT;
    }
    raft_free(buf->base); /* ours on success; raft frees it on failure */
    return 0;
}
