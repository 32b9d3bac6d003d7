/* An intrusive circular doubly linked list for broker objects (connections,
 * requests, waiters), so that unlinking is O(1) and needs no allocation. */
#ifndef KAPPA_BROKER_LIST_H
#define KAPPA_BROKER_LIST_H

#include <stddef.h>

struct list {
    struct list *prev;
    struct list *next;
};

/* A head and an unlinked node both point at themselves. */
static inline void list_init(struct list *l)
{
    l->prev = l;
    l->next = l;
}

static inline int list_is_empty(const struct list *l)
{
    return l->next == l;
}

/* Alias used on nodes: a node is linked when it is not alone. */
static inline int list_is_linked(const struct list *n)
{
    return n->next != n;
}

static inline void list_push_back(struct list *head, struct list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

/* Unlinks n (a no-op for an unlinked node) and leaves it unlinked. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

/* Moves every node of src to the empty head dst, leaving src empty. */
static inline void list_move_all(struct list *dst, struct list *src)
{
    list_init(dst);
    if (list_is_empty(src)) {
        return;
    }
    dst->next = src->next;
    dst->prev = src->prev;
    dst->next->prev = dst;
    dst->prev->next = dst;
    list_init(src);
}

#define list_entry(ptr, type, member)                                          \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif /* KAPPA_BROKER_LIST_H */
