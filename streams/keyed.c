/* Keyed processor state: open addressing on the key's hash, entries never
 * removed (a key whose state becomes empty keeps its slot; the map is
 * bounded by max_keys), and an intrusive list of the entries changed since
 * the last checkpoint, each on it once. */
#include "keyed.h"

#include <string.h>

#include <kappa/streams.h>

#include "common/alloc.h"
#include "window.h"

#define KMAP_SEED 0x6b65796564ull

void kmap_free(struct kmap *m)
{
    for (size_t k = 0; k < m->n_slots; k++) {
        if (m->slots[k] != NULL) {
            kappa_free(m->slots[k]->state);
            kappa_free(m->slots[k]);
        }
    }
    kappa_free(m->slots);
    m->slots = NULL;
    m->n_slots = m->n_used = m->n_dirty = 0;
    m->dirty = NULL;
}

static int grow(struct kmap *m)
{
    size_t n_slots = m->n_slots == 0 ? 1024 : 2 * m->n_slots;
    struct kentry **slots = kappa_calloc(n_slots, sizeof *slots);
    if (slots == NULL) {
        return KAPPA_ENOMEM;
    }
    for (size_t k = 0; k < m->n_slots; k++) {
        struct kentry *e = m->slots[k];
        if (e != NULL) {
            size_t i = (size_t)e->hash & (n_slots - 1);
            while (slots[i] != NULL) {
                i = (i + 1) & (n_slots - 1);
            }
            slots[i] = e;
        }
    }
    kappa_free(m->slots);
    m->slots = slots;
    m->n_slots = n_slots;
    return 0;
}

int kmap_get(struct kmap *m, const void *key, size_t key_len,
             struct kentry **out)
{
    uint64_t h = window_hash(key, key_len, KMAP_SEED);
    struct kentry *e;
    size_t i;

    if (key_len > KAPPA_STREAM_KEY_MAX) {
        return KAPPA_ETOOBIG;
    }
    for (i = m->n_slots > 0 ? (size_t)h & (m->n_slots - 1) : 0;
         m->n_slots > 0 && m->slots[i] != NULL;
         i = (i + 1) & (m->n_slots - 1)) {
        e = m->slots[i];
        if (e->hash == h && e->key_len == key_len &&
            memcmp(e->key, key, key_len) == 0) {
            *out = e;
            return 0;
        }
    }
    if (m->n_used >= m->max_keys) {
        return KAPPA_ETOOBIG;
    }
    if (2 * (m->n_used + 1) > m->n_slots && grow(m) != 0) {
        return KAPPA_ENOMEM;
    }
    e = kappa_calloc(1, sizeof *e + key_len);
    if (e == NULL) {
        return KAPPA_ENOMEM;
    }
    e->hash = h;
    e->key_len = (uint32_t)key_len;
    memcpy(e->key, key, key_len);
    for (i = (size_t)h & (m->n_slots - 1); m->slots[i] != NULL;
         i = (i + 1) & (m->n_slots - 1)) {
    }
    m->slots[i] = e;
    m->n_used++;
    *out = e;
    return 0;
}

int kmap_set(struct kmap *m, struct kentry *e, const void *state, size_t len)
{
    if (len > KAPPA_PROC_STATE_MAX) {
        return KAPPA_ETOOBIG;
    }
    if (len > e->state_cap) {
        uint8_t *p = kappa_malloc(len);
        if (p == NULL) {
            return KAPPA_ENOMEM;
        }
        memcpy(p, state, len); /* state may point into the old buffer */
        kappa_free(e->state);
        e->state = p;
        e->state_cap = (uint32_t)len;
    } else if (len > 0) {
        memmove(e->state, state, len);
    }
    e->state_len = (uint32_t)len;
    if (!e->is_dirty) {
        e->is_dirty = 1;
        e->dirty_next = m->dirty;
        m->dirty = e;
        m->n_dirty++;
    }
    return 0;
}

void kmap_commit_done(struct kmap *m)
{
    while (m->dirty != NULL) {
        struct kentry *e = m->dirty;
        m->dirty = e->dirty_next;
        e->dirty_next = NULL;
        e->is_dirty = 0;
    }
    m->n_dirty = 0;
}
