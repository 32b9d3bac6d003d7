/* Keyed event-time windows.
 *
 * Each aggregation owns one store. Open windows live in an open-addressing
 * hash table keyed by (key, window start), or by key alone for session
 * windows, whose sessions of one key form a short chain. A second,
 * intrusive list orders the open windows by close_at (end + allowed
 * lateness), so closing windows when the watermark moves is a walk from the
 * head; new windows almost always belong at the tail, so inserting is O(1)
 * in practice. Windows only ever change at a checkpoint through the
 * pending list: every window changed, closed or merged away since the last
 * commit is on it exactly once, and closed or merged windows are freed only
 * after the commit that wrote them. Memory is bounded by the open windows
 * (limit->max_open) and the pending list (the job checkpoints early when it
 * grows), never by the length of the history. */
#include "window.h"

#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "value.h"

/* ---- Hash ------------------------------------------------------------------
 */

static uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t window_hash(const void *p, size_t len, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = seed ^ ((uint64_t)len * 0x9E3779B97F4A7C15ull);
    uint64_t x;

    while (len >= 8) {
        memcpy(&x, b, 8);
        h = (h ^ fmix64(x)) * 0x9E3779B97F4A7C15ull;
        b += 8;
        len -= 8;
    }
    x = 0;
    if (len > 0) {
        memcpy(&x, b, len);
    }
    return fmix64(h ^ x ^ ((uint64_t)len << 59));
}

/* ---- Distinct sets
 * ----------------------------------------------------------- */

#define DSET_SEED 0x5eed5eedull

static const uint8_t *dset_member(const struct dset *s, uint64_t slot,
                                  size_t *len)
{
    const uint8_t *m = s->bytes + (uint32_t)slot - 1;
    *len = (size_t)m[0] | (size_t)m[1] << 8;
    return m + 2;
}

static void dset_place(uint64_t *slots, uint32_t n_slots, uint64_t h,
                       uint64_t slot)
{
    uint32_t mask = n_slots - 1;
    uint32_t i = (uint32_t)h & mask;
    while (slots[i] != 0) {
        i = (i + 1) & mask;
    }
    slots[i] = slot;
}

static int dset_grow(struct dset *s)
{
    uint32_t n_slots = s->n_slots == 0 ? 16 : s->n_slots * 2;
    uint64_t *slots;

    if (n_slots == 0 || n_slots > (1u << 30)) {
        return KAPPA_ETOOBIG;
    }
    slots = kappa_calloc(n_slots, sizeof *slots);
    if (slots == NULL) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t k = 0; k < s->n_slots; k++) {
        if (s->slots[k] != 0) {
            size_t len;
            const uint8_t *m = dset_member(s, s->slots[k], &len);
            dset_place(slots, n_slots, window_hash(m, len, DSET_SEED),
                       s->slots[k]);
        }
    }
    kappa_free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
    return 0;
}

static int dset_append(struct dset *s, const void *p, size_t len)
{
    size_t need = s->bytes_len + 2 + len;
    if (need >= UINT32_MAX) {
        return KAPPA_ETOOBIG;
    }
    if (need > s->bytes_cap) {
        size_t cap = s->bytes_cap == 0 ? 256 : s->bytes_cap;
        uint8_t *b;
        while (cap < need) {
            cap *= 2;
        }
        b = kappa_realloc(s->bytes, cap);
        if (b == NULL) {
            return KAPPA_ENOMEM;
        }
        s->bytes = b;
        s->bytes_cap = cap;
    }
    s->bytes[s->bytes_len] = (uint8_t)len;
    s->bytes[s->bytes_len + 1] = (uint8_t)(len >> 8);
    memcpy(s->bytes + s->bytes_len + 2, p, len);
    s->bytes_len = need;
    return 0;
}

int dset_add(struct dset *s, const void *p, size_t len)
{
    uint64_t h = window_hash(p, len, DSET_SEED);
    uint32_t mask, i;
    int rv;

    KAPPA_ASSERT(len <= KAPPA_STREAM_KEY_MAX);
    if ((uint64_t)(s->n + 1) * 2 > s->n_slots) {
        rv = dset_grow(s);
        if (rv != 0) {
            return -rv;
        }
    }
    mask = s->n_slots - 1;
    for (i = (uint32_t)h & mask; s->slots[i] != 0; i = (i + 1) & mask) {
        size_t m_len;
        const uint8_t *m;
        if (s->slots[i] >> 32 != h >> 32) {
            continue;
        }
        m = dset_member(s, s->slots[i], &m_len);
        if (m_len == len && memcmp(m, p, len) == 0) {
            return 0;
        }
    }
    rv = dset_append(s, p, len);
    if (rv != 0) {
        return -rv;
    }
    s->slots[i] = (h >> 32) << 32 | (uint64_t)(s->bytes_len - 2 - len + 1);
    s->n++;
    return 1;
}

void dset_free(struct dset *s)
{
    kappa_free(s->slots);
    kappa_free(s->bytes);
    memset(s, 0, sizeof *s);
}

/* ---- Aggregates
 * ---------------------------------------------------------------- */

size_t agg_distinct_bytes(const struct kappa_field *val, uint8_t *out,
                          size_t cap)
{
    KAPPA_ASSERT(cap >= 9);
    switch (val->type) {
    case KAPPA_FIELD_NULL:
        out[0] = 'n';
        return 1;
    case KAPPA_FIELD_BOOL:
        out[0] = val->i ? 't' : 'f';
        return 1;
    case KAPPA_FIELD_INT:
        out[0] = 'i';
        memcpy(out + 1, &val->i, 8);
        return 9;
    case KAPPA_FIELD_DOUBLE:
        out[0] = 'd';
        memcpy(out + 1, &val->d, 8);
        return 9;
    case KAPPA_FIELD_STRING:
        if (val->str_len + 1 > cap) {
            return 0;
        }
        out[0] = 's';
        memcpy(out + 1, val->str, val->str_len);
        return val->str_len + 1;
    default:
        return 0;
    }
}

static void fold_number(struct agg_state *a, double v)
{
    if (a->count == 0 || v < a->min) {
        a->min = v;
    }
    if (a->count == 0 || v > a->max) {
        a->max = v;
    }
    a->sum += v;
}

static int fold_distinct(struct agg_state *a, uint32_t distinct_max,
                         const void *p, size_t len)
{
    int rv = dset_add(&a->distinct, p, len);
    if (rv < 0) {
        return -rv;
    }
    return a->distinct.n > distinct_max ? KAPPA_ETOOBIG : 0;
}

int agg_update(struct agg_state *a, enum kappa_agg_kind kind,
               uint32_t distinct_max, const struct kappa_field *val)
{
    uint8_t buf[KAPPA_STREAM_KEY_MAX + 1];
    double v;
    size_t len;
    int rv;

    switch (kind) {
    case KAPPA_AGG_COUNT:
        break;
    case KAPPA_AGG_DISTINCT:
        len = val != NULL ? agg_distinct_bytes(val, buf, sizeof buf) : 0;
        if (len == 0 || len > KAPPA_STREAM_KEY_MAX) {
            return KAPPA_EINVAL;
        }
        rv = fold_distinct(a, distinct_max, buf, len);
        if (rv != 0) {
            return rv;
        }
        break;
    default:
        if (val == NULL || value_field_number(val, &v) != 0) {
            return KAPPA_EINVAL;
        }
        fold_number(a, v);
        break;
    }
    a->count++;
    return 0;
}

int agg_merge(struct agg_state *a, enum kappa_agg_kind kind,
              uint32_t distinct_max, const struct agg_state *b)
{
    if (b->count == 0) {
        return 0;
    }
    if (kind == KAPPA_AGG_DISTINCT) {
        for (uint32_t k = 0; k < b->distinct.n_slots; k++) {
            size_t len;
            const uint8_t *m;
            int rv;
            if (b->distinct.slots[k] == 0) {
                continue;
            }
            m = dset_member(&b->distinct, b->distinct.slots[k], &len);
            rv = fold_distinct(a, distinct_max, m, len);
            if (rv != 0) {
                return rv;
            }
        }
    } else if (kind != KAPPA_AGG_COUNT) {
        if (a->count == 0 || b->min < a->min) {
            a->min = b->min;
        }
        if (a->count == 0 || b->max > a->max) {
            a->max = b->max;
        }
        a->sum += b->sum;
    }
    a->count += b->count;
    return 0;
}

void agg_result(const struct agg_state *a, enum kappa_agg_kind kind,
                int *is_int, int64_t *i, double *d)
{
    *is_int = kind == KAPPA_AGG_COUNT || kind == KAPPA_AGG_DISTINCT;
    *i =
        kind == KAPPA_AGG_DISTINCT ? (int64_t)a->distinct.n : (int64_t)a->count;
    switch (kind) {
    case KAPPA_AGG_SUM:
        *d = a->sum;
        break;
    case KAPPA_AGG_MIN:
        *d = a->min;
        break;
    case KAPPA_AGG_MAX:
        *d = a->max;
        break;
    case KAPPA_AGG_AVG:
        *d = a->count > 0 ? a->sum / (double)a->count : 0.0;
        break;
    default:
        *d = (double)*i;
        break;
    }
}

/* ---- Spec
 * ------------------------------------------------------------------------ */

/* Event times are kept within +-2^61 ms so window arithmetic cannot
 * overflow. */
#define TIME_ABS_MAX ((int64_t)1 << 61)

int wstore_check_spec(const struct kappa_agg_spec *spec, const char **why)
{
    if (spec->kind < KAPPA_AGG_COUNT || spec->kind > KAPPA_AGG_DISTINCT) {
        *why = "unknown aggregation";
        return KAPPA_EINVAL;
    }
    if (spec->kind != KAPPA_AGG_COUNT && spec->value_field == NULL) {
        *why = "aggregation needs a value field";
        return KAPPA_EINVAL;
    }
    if (spec->allowed_lateness_ms < 0 ||
        spec->allowed_lateness_ms > TIME_ABS_MAX) {
        *why = "bad allowed lateness";
        return KAPPA_EINVAL;
    }
    switch (spec->window) {
    case KAPPA_WINDOW_TUMBLING:
        if (spec->size_ms <= 0 || spec->size_ms > TIME_ABS_MAX) {
            *why = "bad window size";
            return KAPPA_EINVAL;
        }
        return 0;
    case KAPPA_WINDOW_HOPPING:
        if (spec->size_ms <= 0 || spec->slide_ms <= 0 ||
            spec->size_ms > TIME_ABS_MAX || spec->size_ms % spec->slide_ms ||
            spec->size_ms / spec->slide_ms > WINDOW_HOPS_MAX) {
            *why = "hopping window: size must be a multiple of slide, at "
                   "most 1024 hops";
            return KAPPA_EINVAL;
        }
        return 0;
    case KAPPA_WINDOW_SESSION:
        if (spec->gap_ms <= 0 || spec->gap_ms > TIME_ABS_MAX) {
            *why = "bad session gap";
            return KAPPA_EINVAL;
        }
        return 0;
    default:
        *why = "unknown window type";
        return KAPPA_EINVAL;
    }
}

void wstore_init(struct wstore *s, const struct kappa_agg_spec *spec,
                 struct wlimit *limit)
{
    memset(s, 0, sizeof *s);
    s->spec = *spec;
    if (s->spec.distinct_max == 0) {
        s->spec.distinct_max = WINDOW_DISTINCT_DEFAULT;
    }
    s->limit = limit;
}

static void entry_free(struct wentry *e)
{
    dset_free(&e->agg.distinct);
    kappa_free(e);
}

void wstore_free(struct wstore *s)
{
    struct wentry *e = s->pending;
    while (e != NULL) {
        struct wentry *next = e->pending_next;
        if (e->state != WENTRY_OPEN) {
            entry_free(e);
        }
        e = next;
    }
    for (size_t k = 0; k < s->n_slots; k++) {
        e = s->slots[k];
        while (e != NULL) {
            struct wentry *next = e->sibling;
            s->limit->n_open--;
            entry_free(e);
            e = next;
        }
    }
    kappa_free(s->slots);
    memset(s, 0, sizeof *s);
}

/* ---- Hash table
 * --------------------------------------------------------------------- */

static int is_session(const struct wstore *s)
{
    return s->spec.window == KAPPA_WINDOW_SESSION;
}

static uint64_t entry_hash(const struct wstore *s, const void *key,
                           size_t key_len, int64_t start)
{
    uint64_t h = window_hash(key, key_len, 0);
    return is_session(s) ? h : h ^ fmix64((uint64_t)start + 0x1234567ull);
}

static int entry_matches(const struct wstore *s, const struct wentry *e,
                         uint64_t h, const void *key, size_t key_len,
                         int64_t start)
{
    return e->hash == h && e->key_len == key_len &&
           (is_session(s) || e->start == start) &&
           memcmp(e->key, key, key_len) == 0;
}

/* Index of the matching slot, or of the empty slot where it would go. */
static size_t map_slot(const struct wstore *s, uint64_t h, const void *key,
                       size_t key_len, int64_t start)
{
    size_t mask = s->n_slots - 1;
    size_t i = (size_t)h & mask;
    while (s->slots[i] != NULL &&
           !entry_matches(s, s->slots[i], h, key, key_len, start)) {
        i = (i + 1) & mask;
    }
    return i;
}

static int map_grow(struct wstore *s)
{
    size_t n_slots = s->n_slots == 0 ? 64 : s->n_slots * 2;
    struct wentry **slots = kappa_calloc(n_slots, sizeof *slots);
    if (slots == NULL) {
        return KAPPA_ENOMEM;
    }
    for (size_t k = 0; k < s->n_slots; k++) {
        if (s->slots[k] != NULL) {
            size_t i = (size_t)s->slots[k]->hash & (n_slots - 1);
            while (slots[i] != NULL) {
                i = (i + 1) & (n_slots - 1);
            }
            slots[i] = s->slots[k];
        }
    }
    kappa_free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
    return 0;
}

/* Backward-shift deletion keeps probe sequences intact without
 * tombstones. */
static void map_remove_at(struct wstore *s, size_t i)
{
    size_t mask = s->n_slots - 1;
    size_t j = i;
    for (;;) {
        size_t home;
        j = (j + 1) & mask;
        if (s->slots[j] == NULL) {
            break;
        }
        home = (size_t)s->slots[j]->hash & mask;
        /* Move j back to i if its home is not in (i, j] cyclically. */
        if ((j > i && (home <= i || home > j)) ||
            (j < i && (home <= i && home > j))) {
            s->slots[i] = s->slots[j];
            i = j;
        }
    }
    s->slots[i] = NULL;
    s->n_used--;
}

/* ---- Time list and pending list
 * ---------------------------------------------------- */

static void list_unlink(struct wstore *s, struct wentry *e)
{
    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        s->head = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    } else {
        s->tail = e->prev;
    }
    e->prev = e->next = NULL;
}

static void list_insert(struct wstore *s, struct wentry *e)
{
    struct wentry *after = s->tail;
    while (after != NULL && after->close_at > e->close_at) {
        after = after->prev;
    }
    e->prev = after;
    e->next = after != NULL ? after->next : s->head;
    if (e->next != NULL) {
        e->next->prev = e;
    } else {
        s->tail = e;
    }
    if (after != NULL) {
        after->next = e;
    } else {
        s->head = e;
    }
}

static void mark_pending(struct wstore *s, struct wentry *e)
{
    if (!e->is_pending) {
        e->is_pending = 1;
        e->pending_next = s->pending;
        s->pending = e;
        s->n_pending++;
    }
}

/* Takes an open entry out of the table and the time list. */
static void entry_detach(struct wstore *s, struct wentry *e)
{
    size_t i = map_slot(s, e->hash, e->key, e->key_len, e->start);
    KAPPA_ASSERT(s->slots[i] != NULL);
    if (!is_session(s)) {
        KAPPA_ASSERT(s->slots[i] == e);
        map_remove_at(s, i);
    } else if (s->slots[i] == e) {
        if (e->sibling != NULL) {
            s->slots[i] = e->sibling;
        } else {
            map_remove_at(s, i);
        }
    } else {
        struct wentry *p = s->slots[i];
        while (p->sibling != e) {
            p = p->sibling;
            KAPPA_ASSERT(p != NULL);
        }
        p->sibling = e->sibling;
    }
    e->sibling = NULL;
    list_unlink(s, e);
    s->limit->n_open--;
}

/* Creates an open window and links it into the table and the list. */
static int entry_new(struct wstore *s, const void *key, size_t key_len,
                     int64_t start, int64_t end, struct wentry **out)
{
    struct wentry *e;
    uint64_t h = entry_hash(s, key, key_len, start);
    size_t i;

    if (s->limit->n_open >= s->limit->max_open) {
        return KAPPA_ETOOBIG;
    }
    if ((s->n_used + 1) * 2 > s->n_slots && map_grow(s) != 0) {
        return KAPPA_ENOMEM;
    }
    e = kappa_calloc(1, sizeof *e + key_len);
    if (e == NULL) {
        return KAPPA_ENOMEM;
    }
    e->hash = h;
    e->start = start;
    e->end = end;
    e->close_at = end + s->spec.allowed_lateness_ms;
    e->state = WENTRY_OPEN;
    e->key_len = (uint32_t)key_len;
    if (key_len > 0) {
        memcpy(e->key, key, key_len);
    }
    i = map_slot(s, h, key, key_len, start);
    if (s->slots[i] == NULL) {
        s->slots[i] = e;
        s->n_used++;
    } else {
        KAPPA_ASSERT(is_session(s));
        e->sibling = s->slots[i];
        s->slots[i] = e;
    }
    list_insert(s, e);
    s->limit->n_open++;
    *out = e;
    return 0;
}

/* ---- Adding events
 * --------------------------------------------------------------------- */

static int add_to_window(struct wstore *s, const void *key, size_t key_len,
                         int64_t start, const struct kappa_field *val)
{
    struct wentry *e = NULL;
    uint64_t h = entry_hash(s, key, key_len, start);
    int rv;

    if (s->n_slots > 0) {
        e = s->slots[map_slot(s, h, key, key_len, start)];
    }
    if (e == NULL) {
        rv = entry_new(s, key, key_len, start, start + s->spec.size_ms, &e);
        if (rv != 0) {
            return rv;
        }
    }
    mark_pending(s, e);
    return agg_update(&e->agg, s->spec.kind, s->spec.distinct_max, val);
}

static int add_session(struct wstore *s, const void *key, size_t key_len,
                       int64_t t, const struct kappa_field *val)
{
    int64_t start = t, end = t + s->spec.gap_ms;
    struct wentry *chain = NULL, *e, *next, *only = NULL;
    int n_overlap = 0, rv;

    if (s->n_slots > 0) {
        chain = s->slots[map_slot(s, entry_hash(s, key, key_len, 0), key,
                                  key_len, 0)];
    }
    for (e = chain; e != NULL; e = e->sibling) {
        if (e->start < end && t < e->end) {
            n_overlap++;
            only = e;
        }
    }
    if (n_overlap == 1 && only->start <= t) {
        /* The common case: the event extends (or falls into) a session
         * without moving its start, so its rows keep their key. */
        if (end > only->end) {
            only->end = end;
            only->close_at = end + s->spec.allowed_lateness_ms;
            list_unlink(s, only);
            list_insert(s, only);
        }
        mark_pending(s, only);
        return agg_update(&only->agg, s->spec.kind, s->spec.distinct_max, val);
    }
    for (e = chain; e != NULL; e = e->sibling) {
        if (e->start < end && t < e->end) {
            start = e->start < start ? e->start : start;
            end = e->end > end ? e->end : end;
        }
    }
    rv = entry_new(s, key, key_len, start, end, &only);
    if (rv != 0) {
        return rv;
    }
    mark_pending(s, only);
    /* The sessions merged into the new one die; their rows are deleted at
     * the next checkpoint. only is the chain head, so start after it. */
    for (e = only->sibling; e != NULL; e = next) {
        next = e->sibling;
        if (e->start < only->end && only->start < e->end) {
            rv = agg_merge(&only->agg, s->spec.kind, s->spec.distinct_max,
                           &e->agg);
            if (rv != 0) {
                return rv;
            }
            entry_detach(s, e);
            e->state = WENTRY_DEAD;
            mark_pending(s, e);
        }
    }
    return agg_update(&only->agg, s->spec.kind, s->spec.distinct_max, val);
}

/* Whether val can feed this aggregation at all (checked before any window
 * is created, so a bad value leaves no empty window behind). */
static int value_usable(const struct wstore *s, const struct kappa_field *val)
{
    uint8_t buf[KAPPA_STREAM_KEY_MAX + 1];
    double v;
    size_t len;

    switch (s->spec.kind) {
    case KAPPA_AGG_COUNT:
        return 1;
    case KAPPA_AGG_DISTINCT:
        len = val != NULL ? agg_distinct_bytes(val, buf, sizeof buf) : 0;
        return len > 0 && len <= KAPPA_STREAM_KEY_MAX;
    default:
        return val != NULL && value_field_number(val, &v) == 0;
    }
}

int wstore_add(struct wstore *s, const void *key, size_t key_len, int64_t t,
               const struct kappa_field *val, int64_t watermark, int *is_late)
{
    int64_t lateness = s->spec.allowed_lateness_ms;
    int rv = 0;

    *is_late = 0;
    if (key_len > KAPPA_STREAM_KEY_MAX || t > TIME_ABS_MAX ||
        t < -TIME_ABS_MAX || !value_usable(s, val)) {
        s->malformed++;
        return KAPPA_EINVAL;
    }
    switch (s->spec.window) {
    case KAPPA_WINDOW_TUMBLING: {
        int64_t start = window_floor(t, s->spec.size_ms) * s->spec.size_ms;
        if (start + s->spec.size_ms + lateness <= watermark) {
            *is_late = 1;
        } else {
            rv = add_to_window(s, key, key_len, start, val);
        }
        break;
    }
    case KAPPA_WINDOW_HOPPING: {
        int64_t last = window_floor(t, s->spec.slide_ms) * s->spec.slide_ms;
        for (int64_t start = last; start > t - s->spec.size_ms && rv == 0;
             start -= s->spec.slide_ms) {
            if (start + s->spec.size_ms + lateness <= watermark) {
                *is_late = 1;
            } else {
                rv = add_to_window(s, key, key_len, start, val);
            }
        }
        break;
    }
    default:
        if (t + s->spec.gap_ms + lateness <= watermark) {
            *is_late = 1;
        } else {
            rv = add_session(s, key, key_len, t, val);
        }
        break;
    }
    if (*is_late) {
        s->late++;
    }
    return rv;
}

void wstore_advance(struct wstore *s, int64_t watermark)
{
    while (s->head != NULL && s->head->close_at <= watermark) {
        struct wentry *e = s->head;
        entry_detach(s, e);
        e->state = WENTRY_CLOSED;
        mark_pending(s, e);
    }
}

static int restore_shape_ok(const struct wstore *s, int64_t start, int64_t end)
{
    const struct kappa_agg_spec *sp = &s->spec;
    if (start < -TIME_ABS_MAX || end > TIME_ABS_MAX || end <= start) {
        return 0;
    }
    switch (sp->window) {
    case KAPPA_WINDOW_TUMBLING:
        return end - start == sp->size_ms && start % sp->size_ms == 0;
    case KAPPA_WINDOW_HOPPING:
        return end - start == sp->size_ms && start % sp->slide_ms == 0;
    default:
        return end - start >= sp->gap_ms;
    }
}

int wstore_restore(struct wstore *s, const void *key, size_t key_len,
                   int64_t start, int64_t end, struct agg_state *agg)
{
    struct wentry *e;
    int rv;

    if (key_len > KAPPA_STREAM_KEY_MAX || !restore_shape_ok(s, start, end)) {
        dset_free(&agg->distinct);
        return KAPPA_ECORRUPT;
    }
    if (s->n_slots > 0) {
        uint64_t h = entry_hash(s, key, key_len, start);
        for (e = s->slots[map_slot(s, h, key, key_len, start)]; e != NULL;
             e = e->sibling) {
            if (e->start < end && start < e->end) {
                dset_free(&agg->distinct);
                return KAPPA_ECORRUPT;
            }
        }
    }
    rv = entry_new(s, key, key_len, start, end, &e);
    if (rv != 0) {
        dset_free(&agg->distinct);
        return rv;
    }
    e->agg = *agg;
    memset(agg, 0, sizeof *agg);
    e->is_persisted = 1;
    return 0;
}

void wstore_commit_done(struct wstore *s)
{
    struct wentry *e = s->pending;
    while (e != NULL) {
        struct wentry *next = e->pending_next;
        e->pending_next = NULL;
        e->is_pending = 0;
        if (e->state == WENTRY_OPEN) {
            e->is_persisted = 1;
        } else {
            entry_free(e);
        }
        e = next;
    }
    s->pending = NULL;
    s->n_pending = 0;
}
