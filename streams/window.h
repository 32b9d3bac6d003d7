/* Keyed event-time windows and their aggregates: assigning an event to its
 * tumbling, hopping or session windows, late detection against the
 * watermark, closing, and the list of windows the next checkpoint writes.
 * Pure: no I/O and no clock (time is the watermark passed in). */
#ifndef KAPPA_STREAMS_WINDOW_H
#define KAPPA_STREAMS_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Hopping windows per event (size / slide). */
#define WINDOW_HOPS_MAX 1024
/* Default distinct values per window. */
#define WINDOW_DISTINCT_DEFAULT 1000000u

/* An exact set of byte strings (each at most KAPPA_STREAM_KEY_MAX bytes). */
struct dset {
    uint64_t *slots; /* hash << 32 | (offset + 1); 0 is empty */
    uint32_t n;
    uint32_t n_slots; /* power of two, 0 before the first insert */
    uint8_t *bytes;   /* u16 LE length + bytes per member */
    size_t bytes_len;
    size_t bytes_cap;
};

/* Returns 1 if added, 0 if already present, or -KAPPA_ENOMEM. */
int dset_add(struct dset *s, const void *p, size_t len);
void dset_free(struct dset *s);

struct agg_state {
    uint64_t count;
    double sum;
    double min;
    double max;
    struct dset distinct;
};

/* Folds one input into the state; val is NULL for COUNT. Returns 0,
 * KAPPA_EINVAL (val unusable for this kind: counted as malformed),
 * KAPPA_ETOOBIG (distinct_max) or KAPPA_ENOMEM. */
int agg_update(struct agg_state *a, enum kappa_agg_kind kind,
               uint32_t distinct_max, const struct kappa_field *val);
/* Merges b into a (session windows). */
int agg_merge(struct agg_state *a, enum kappa_agg_kind kind,
              uint32_t distinct_max, const struct agg_state *b);
/* The result: *is_int selects *i (COUNT, DISTINCT) or *d. */
void agg_result(const struct agg_state *a, enum kappa_agg_kind kind,
                int *is_int, int64_t *i, double *d);
/* Canonical bytes of a scalar for DISTINCT: a type tag and the value (so 1
 * and "1" differ). Returns the length or 0 for a non-scalar. */
size_t agg_distinct_bytes(const struct kappa_field *val, uint8_t *out,
                          size_t cap);

enum wentry_state {
    WENTRY_OPEN = 1,
    WENTRY_CLOSED, /* final result pending write, then freed */
    WENTRY_DEAD,   /* merged away: rows to delete, then freed */
};

struct wentry {
    struct wentry *prev; /* open entries ordered by close_at */
    struct wentry *next;
    struct wentry *sibling;      /* SESSION: next session of the same key */
    struct wentry *pending_next; /* in wstore.pending */
    uint64_t hash;
    int64_t start;
    int64_t end;
    int64_t close_at; /* end + allowed lateness */
    uint8_t state;
    uint8_t is_pending;
    uint8_t is_persisted; /* rows exist as of the last commit */
    uint32_t key_len;
    struct agg_state agg;
    uint8_t key[];
};

/* Bound shared by every store of a job. */
struct wlimit {
    uint32_t n_open;
    uint32_t max_open;
};

struct wstore {
    struct kappa_agg_spec spec; /* strings owned by the job */
    struct wlimit *limit;
    struct wentry **slots; /* open addressing on (key, start) or (key) */
    size_t n_slots;
    size_t n_used;
    struct wentry *head; /* smallest close_at */
    struct wentry *tail;
    struct wentry *pending;
    size_t n_pending;
    int64_t late;
    int64_t malformed;
};

/* Checks a spec (window sizes, names). Returns 0 or KAPPA_EINVAL with a
 * reason in why. */
int wstore_check_spec(const struct kappa_agg_spec *spec, const char **why);
void wstore_init(struct wstore *s, const struct kappa_agg_spec *spec,
                 struct wlimit *limit);
/* Frees every entry, pending ones included. */
void wstore_free(struct wstore *s);

/* Adds an event with event time t. A window is late when end + lateness <=
 * watermark; the event goes into its other windows and *is_late is set if
 * any window was late (for a session: if its new session would be). Returns
 * 0, KAPPA_EINVAL (val unusable: counted in s->malformed, nothing changed),
 * KAPPA_ETOOBIG (open windows or distinct values over the limit) or
 * KAPPA_ENOMEM. */
int wstore_add(struct wstore *s, const void *key, size_t key_len, int64_t t,
               const struct kappa_field *val, int64_t watermark, int *is_late);
/* Closes every window with close_at <= watermark. */
void wstore_advance(struct wstore *s, int64_t watermark);

/* Restores an open window from a checkpoint (it counts as persisted).
 * Takes ownership of agg's distinct set, also on failure. Returns 0,
 * KAPPA_ECORRUPT (duplicate or inconsistent window), KAPPA_ETOOBIG or
 * KAPPA_ENOMEM. */
int wstore_restore(struct wstore *s, const void *key, size_t key_len,
                   int64_t start, int64_t end, struct agg_state *agg);

/* After the pending entries were written and committed: frees closed and
 * dead entries, marks open ones persisted, empties the list. */
void wstore_commit_done(struct wstore *s);

/* Key hash (also used for the DISTINCT sets). */
uint64_t window_hash(const void *p, size_t len, uint64_t seed);

/* Floor division for window alignment (b > 0). */
static inline int64_t window_floor(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

#endif /* KAPPA_STREAMS_WINDOW_H */
