/*
 * Producer state of one partition. Producers are kept in an array sorted by
 * producer id (binary search to find, memmove to insert), which also gives
 * the encoding a canonical order: equal states encode to identical bytes.
 *
 * Encoding (msgpack), written by producer_state_encode:
 *
 *   array(2)
 *     uint    format version, 1
 *     array(n_producers)            ascending producer id, no repeats
 *       array(3)
 *         uint    producer_id       0 .. INT64_MAX
 *         uint    epoch             0 .. INT16_MAX
 *         array(n_batches)          1 .. PRODUCER_STATE_BATCHES, oldest first
 *           array(4)
 *             uint first_sequence   0 .. INT32_MAX
 *             uint last_sequence    first + count - 1, wrapping at INT32_MAX
 *             uint base_offset      0 .. INT64_MAX
 *             uint record_count     1 .. KAPPA_BATCH_RECORDS_MAX
 *
 * msgpack-c always picks the shortest integer form, so the bytes depend only
 * on the values. The decoder checks every field and the ordering and builds a
 * new table before replacing the old one.
 */
#include "producer_state.h"

#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/batch.h"
#include "common/err.h"

#define FORMAT_VERSION 1

struct producer_entry {
    int64_t producer_id;
    int16_t epoch;
    uint32_t n_batches;
    struct producer_batch batches[PRODUCER_STATE_BATCHES]; /* oldest first */
};

struct producer_state {
    uint32_t max_producers;
    uint32_t n_producers;
    uint32_t cap; /* slots allocated in entries */
    struct producer_entry *entries;
};

struct producer_state *producer_state_new(uint32_t max_producers)
{
    struct producer_state *ps;
    if (max_producers == 0 || max_producers > PRODUCER_STATE_PRODUCERS_MAX) {
        return NULL;
    }
    ps = kappa_calloc(1, sizeof *ps);
    if (ps != NULL) {
        ps->max_producers = max_producers;
    }
    return ps;
}

void producer_state_free(struct producer_state *ps)
{
    if (ps == NULL) {
        return;
    }
    kappa_free(ps->entries);
    kappa_free(ps);
}

int32_t producer_sequence_add(int32_t seq, int32_t inc)
{
    KAPPA_ASSERT(seq >= 0);
    KAPPA_ASSERT(inc >= 0);
    if (seq > INT32_MAX - inc) {
        return inc - (INT32_MAX - seq) - 1;
    }
    return seq + inc;
}

/* Kafka's inSequence: next follows last, 0 following INT32_MAX. */
static int in_sequence(int32_t last, int32_t next)
{
    return (last == INT32_MAX && next == 0) ||
           (last != INT32_MAX && next == last + 1);
}

static int args_are_valid(int64_t producer_id, int16_t epoch,
                          int32_t base_sequence, uint32_t record_count)
{
    return producer_id >= 0 && epoch >= 0 && base_sequence >= 0 &&
           record_count >= 1 && record_count <= KAPPA_BATCH_RECORDS_MAX;
}

/* Index of producer_id, or of where it would be inserted (*found = 0). */
static uint32_t find_slot(const struct producer_state *ps, int64_t producer_id,
                          int *found)
{
    uint32_t lo = 0;
    uint32_t hi = ps->n_producers;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int64_t id = ps->entries[mid].producer_id;
        if (id == producer_id) {
            *found = 1;
            return mid;
        }
        if (id < producer_id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = 0;
    return lo;
}

static const struct producer_entry *lookup(const struct producer_state *ps,
                                           int64_t producer_id)
{
    int found;
    uint32_t i = find_slot(ps, producer_id, &found);
    return found ? &ps->entries[i] : NULL;
}

static const struct producer_batch *
find_duplicate(const struct producer_entry *e, int32_t first, int32_t last)
{
    for (uint32_t i = 0; i < e->n_batches; i++) {
        if (e->batches[i].first_sequence == first &&
            e->batches[i].last_sequence == last) {
            return &e->batches[i];
        }
    }
    return NULL;
}

int producer_state_check(const struct producer_state *ps, int64_t producer_id,
                         int16_t epoch, int32_t base_sequence,
                         uint32_t record_count, int64_t *dup_base_offset)
{
    const struct producer_entry *e;
    const struct producer_batch *dup;
    int32_t last;

    if (producer_id == PRODUCER_ID_NONE) {
        return 0;
    }
    if (!args_are_valid(producer_id, epoch, base_sequence, record_count)) {
        return KAPPA_EINVAL;
    }
    e = lookup(ps, producer_id);
    if (e == NULL) {
        return 0;
    }
    if (epoch < e->epoch) {
        return KAPPA_EFENCED;
    }
    if (epoch > e->epoch) {
        return base_sequence == 0 ? 0 : KAPPA_ESEQUENCE;
    }
    last = producer_sequence_add(base_sequence, (int32_t)(record_count - 1));
    dup = find_duplicate(e, base_sequence, last);
    if (dup != NULL) {
        if (dup_base_offset != NULL) {
            *dup_base_offset = dup->base_offset;
        }
        return KAPPA_EDUPLICATE;
    }
    KAPPA_ASSERT(e->n_batches > 0);
    if (!in_sequence(e->batches[e->n_batches - 1].last_sequence,
                     base_sequence)) {
        return KAPPA_ESEQUENCE;
    }
    return 0;
}

/* The recency of a producer: the base offset of its newest batch. */
static int64_t recency(const struct producer_entry *e)
{
    KAPPA_ASSERT(e->n_batches > 0);
    return e->batches[e->n_batches - 1].base_offset;
}

static uint32_t least_recently_used(const struct producer_state *ps)
{
    uint32_t lru = 0;
    KAPPA_ASSERT(ps->n_producers > 0);
    /* Entries are sorted by id, so "<" keeps the lowest id on ties. */
    for (uint32_t i = 1; i < ps->n_producers; i++) {
        if (recency(&ps->entries[i]) < recency(&ps->entries[lru])) {
            lru = i;
        }
    }
    return lru;
}

static void remove_at(struct producer_state *ps, uint32_t i)
{
    memmove(&ps->entries[i], &ps->entries[i + 1],
            (ps->n_producers - i - 1) * sizeof ps->entries[0]);
    ps->n_producers--;
}

static int reserve_one(struct producer_state *ps)
{
    struct producer_entry *entries;
    uint32_t cap;
    if (ps->n_producers < ps->cap) {
        return 0;
    }
    cap = ps->cap == 0 ? 8 : ps->cap * 2;
    if (cap > ps->max_producers) {
        cap = ps->max_producers;
    }
    entries = kappa_realloc(ps->entries, (size_t)cap * sizeof *entries);
    if (entries == NULL) {
        return KAPPA_ENOMEM;
    }
    ps->entries = entries;
    ps->cap = cap;
    return 0;
}

/* Returns the entry for producer_id, inserting an empty one (evicting the
 * least recently used producer when full). */
static struct producer_entry *get_or_insert(struct producer_state *ps,
                                            int64_t producer_id)
{
    int found;
    uint32_t i = find_slot(ps, producer_id, &found);
    if (found) {
        return &ps->entries[i];
    }
    if (ps->n_producers == ps->max_producers) {
        uint32_t victim = least_recently_used(ps);
        remove_at(ps, victim);
        if (victim < i) {
            i--;
        }
    } else if (reserve_one(ps) != 0) {
        return NULL;
    }
    memmove(&ps->entries[i + 1], &ps->entries[i],
            (ps->n_producers - i) * sizeof ps->entries[0]);
    memset(&ps->entries[i], 0, sizeof ps->entries[i]);
    ps->entries[i].producer_id = producer_id;
    ps->n_producers++;
    return &ps->entries[i];
}

static void push_batch(struct producer_entry *e, const struct producer_batch *b)
{
    if (e->n_batches == PRODUCER_STATE_BATCHES) {
        memmove(&e->batches[0], &e->batches[1],
                (PRODUCER_STATE_BATCHES - 1) * sizeof e->batches[0]);
        e->n_batches--;
    }
    e->batches[e->n_batches++] = *b;
}

int producer_state_record(struct producer_state *ps, int64_t producer_id,
                          int16_t epoch, int32_t base_sequence,
                          uint32_t record_count, int64_t base_offset)
{
    struct producer_entry *e;
    struct producer_batch b;
    const struct producer_entry *old;

    if (producer_id == PRODUCER_ID_NONE) {
        return 0;
    }
    if (!args_are_valid(producer_id, epoch, base_sequence, record_count) ||
        base_offset < 0) {
        return KAPPA_EINVAL;
    }
    old = lookup(ps, producer_id);
    if (old != NULL && epoch < old->epoch) {
        return 0; /* a stale batch from a deposed leader: keep the newer */
    }
    e = get_or_insert(ps, producer_id);
    if (e == NULL) {
        return KAPPA_ENOMEM;
    }
    if (e->n_batches == 0 || epoch > e->epoch) {
        e->n_batches = 0;
        e->epoch = epoch;
    }
    b.first_sequence = base_sequence;
    b.last_sequence =
        producer_sequence_add(base_sequence, (int32_t)(record_count - 1));
    b.base_offset = base_offset;
    b.record_count = record_count;
    push_batch(e, &b);
    return 0;
}

uint32_t producer_state_count(const struct producer_state *ps)
{
    return ps->n_producers;
}

int producer_state_get(const struct producer_state *ps, int64_t producer_id,
                       int16_t *epoch, struct producer_batch *batches,
                       uint32_t *n_batches)
{
    const struct producer_entry *e = lookup(ps, producer_id);
    if (e == NULL) {
        return KAPPA_ENOENT;
    }
    if (epoch != NULL) {
        *epoch = e->epoch;
    }
    if (batches != NULL) {
        memcpy(batches, e->batches, e->n_batches * sizeof e->batches[0]);
    }
    if (n_batches != NULL) {
        *n_batches = e->n_batches;
    }
    return 0;
}

void producer_state_encode(const struct producer_state *ps, struct mp_writer *w)
{
    mp_put_array(w, 2);
    mp_put_uint(w, FORMAT_VERSION);
    mp_put_array(w, ps->n_producers);
    for (uint32_t i = 0; i < ps->n_producers; i++) {
        const struct producer_entry *e = &ps->entries[i];
        mp_put_array(w, 3);
        mp_put_uint(w, (uint64_t)e->producer_id);
        mp_put_uint(w, (uint64_t)e->epoch);
        mp_put_array(w, e->n_batches);
        for (uint32_t j = 0; j < e->n_batches; j++) {
            const struct producer_batch *b = &e->batches[j];
            mp_put_array(w, 4);
            mp_put_uint(w, (uint64_t)b->first_sequence);
            mp_put_uint(w, (uint64_t)b->last_sequence);
            mp_put_uint(w, (uint64_t)b->base_offset);
            mp_put_uint(w, b->record_count);
        }
    }
}

static int decode_batch(struct mp_reader *r, struct producer_batch *b)
{
    uint32_t n;
    int64_t first, last, offset, count;
    if (mp_read_array(r, &n) != 0 || n != 4 ||
        mp_read_int_range(r, 0, INT32_MAX, &first) != 0 ||
        mp_read_int_range(r, 0, INT32_MAX, &last) != 0 ||
        mp_read_int_range(r, 0, INT64_MAX, &offset) != 0 ||
        mp_read_int_range(r, 1, KAPPA_BATCH_RECORDS_MAX, &count) != 0) {
        return KAPPA_EPROTO;
    }
    if (producer_sequence_add((int32_t)first, (int32_t)(count - 1)) != last) {
        return KAPPA_EPROTO;
    }
    b->first_sequence = (int32_t)first;
    b->last_sequence = (int32_t)last;
    b->base_offset = offset;
    b->record_count = (uint32_t)count;
    return 0;
}

static int decode_entry(struct mp_reader *r, struct producer_entry *e)
{
    uint32_t n;
    int64_t id, epoch;
    if (mp_read_array(r, &n) != 0 || n != 3 ||
        mp_read_int_range(r, 0, INT64_MAX, &id) != 0 ||
        mp_read_int_range(r, 0, INT16_MAX, &epoch) != 0 ||
        mp_read_array(r, &n) != 0 || n == 0 || n > PRODUCER_STATE_BATCHES) {
        return KAPPA_EPROTO;
    }
    memset(e, 0, sizeof *e);
    e->producer_id = id;
    e->epoch = (int16_t)epoch;
    e->n_batches = n;
    for (uint32_t i = 0; i < n; i++) {
        if (decode_batch(r, &e->batches[i]) != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

int producer_state_decode(struct producer_state *ps, struct mp_reader *r)
{
    struct producer_entry *entries = NULL;
    uint32_t n;
    int64_t version;

    if (mp_read_array(r, &n) != 0 || n != 2 ||
        mp_read_int_range(r, FORMAT_VERSION, FORMAT_VERSION, &version) != 0 ||
        mp_read_array(r, &n) != 0 || n > ps->max_producers) {
        return KAPPA_EPROTO;
    }
    /* mp_read_array checked n against the bytes left, so n is bounded by
     * the input size as well as by max_producers. */
    if (n > 0) {
        entries = kappa_malloc((size_t)n * sizeof *entries);
        if (entries == NULL) {
            return KAPPA_ENOMEM;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (decode_entry(r, &entries[i]) != 0 ||
            (i > 0 && entries[i].producer_id <= entries[i - 1].producer_id)) {
            kappa_free(entries);
            return KAPPA_EPROTO;
        }
    }
    kappa_free(ps->entries);
    ps->entries = entries;
    ps->n_producers = n;
    ps->cap = n;
    return 0;
}
