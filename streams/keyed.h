/* The state of a keyed processor: a hash map from key to a byte string,
 * with the list of keys changed since the last checkpoint. Pure: no I/O. */
#ifndef KAPPA_STREAMS_KEYED_H
#define KAPPA_STREAMS_KEYED_H

#include <stddef.h>
#include <stdint.h>

struct kentry {
    struct kentry *dirty_next; /* in kmap.dirty */
    uint64_t hash;
    uint8_t is_dirty;
    uint32_t key_len;
    uint32_t state_len;
    uint32_t state_cap;
    uint8_t *state;
    uint8_t key[];
};

struct kmap {
    struct kentry **slots; /* open addressing, linear probing */
    size_t n_slots;        /* power of two, 0 before the first key */
    size_t n_used;
    struct kentry *dirty;
    size_t n_dirty;
    uint32_t max_keys;
};

/* A zeroed map with max_keys set is valid. */
void kmap_free(struct kmap *m);
/* Finds key, adding it with an empty state when missing. Returns 0,
 * KAPPA_ETOOBIG (max_keys, or a key over KAPPA_STREAM_KEY_MAX bytes) or
 * KAPPA_ENOMEM. */
int kmap_get(struct kmap *m, const void *key, size_t key_len,
             struct kentry **out);
/* Replaces e's state (len <= KAPPA_PROC_STATE_MAX) and marks it changed.
 * Returns 0, KAPPA_ETOOBIG or KAPPA_ENOMEM (state unchanged). */
int kmap_set(struct kmap *m, struct kentry *e, const void *state, size_t len);
/* Forgets the changed list after a commit. */
void kmap_commit_done(struct kmap *m);

#endif /* KAPPA_STREAMS_KEYED_H */
