/*
 * The metadata state machine. Commands come from the Raft log, but they are
 * decoded as untrusted input anyway: every length is bounded, every field is
 * checked, and a command is fully decoded and validated before the state
 * changes, so a bad command yields an error result and no change, the same
 * on every replica.
 *
 * Command format (msgpack): array(n) whose first element is the type.
 *
 *   [1 register_broker,  id, client_addr str, cluster_addr str, now_ms int]
 *   [2 broker_heartbeat, id, now_ms int]
 *   [3 decommission_broker, id]
 *   [4 create_topic,     name str, n_partitions, replication_factor,
 *                        configs map str->str, min_heartbeat_ms int]
 *   [5 delete_topic,     name str]
 *   [6 alter_topic_config, name str, changes map str->(str | nil=delete)]
 *   [7 reassign_partition, name str, partition, replicas array(uint)]
 *   [8 set_leader_hint,  name str, partition, leader (0=unknown), epoch]
 *   [9 allocate_producer_ids, n]
 *
 * Apply result: a value packed into raft's void *result (nothing to free):
 * (intptr_t)result >= 0 is success with that value, < 0 is -(KAPPA_E*).
 *
 * Snapshot (msgpack), canonical: brokers sorted by id, topics by name,
 * configs by key, integers in msgpack's shortest form:
 *
 *   array(4)
 *     uint  format version, 1
 *     uint  next_producer_id
 *     array(n_brokers) of array(5):
 *       uint id, str client_addr, str cluster_addr, uint state,
 *       int last_heartbeat_ms
 *     array(n_topics) of array(5):
 *       str name, uint replication_factor, uint created_index,
 *       map configs (str -> str),
 *       array(n_partitions) of array(3):
 *         array(uint) replicas, uint leader, uint leader_epoch
 *
 * Placement (create_topic): the eligible brokers are the alive ones whose
 * last heartbeat is >= the command's min_heartbeat_ms, in id order (L of
 * them). Round-robin from a start derived from the existing load: the start
 * is the eligible broker that is preferred leader of the fewest partitions
 * (ties: fewest replicas, then lowest id). Each partition's preferred leader
 * is the broker leading the fewest partitions so far (counting the ones
 * just placed), ties going to the first at or after the previous leader + 1
 * in cyclic order; its followers are the next rf-1 eligible brokers in
 * cyclic order. With equal loads that is plain round-robin, and otherwise
 * new topics fill the least loaded brokers first, so the counts of
 * preferred leaders differ by at most one whenever they did before.
 */
#include "meta_fsm.h"

#include <string.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/err.h"
#include "common/mp.h"
#include "common/topic_name.h"

#define FORMAT_VERSION 1

_Static_assert(sizeof(intptr_t) >= sizeof(int64_t),
               "apply results pack an int64 into a pointer");
_Static_assert((uint64_t)META_TOPICS_MAX *META_TOPIC_PARTITIONS_MAX >=
                   META_PARTITIONS_MAX,
               "the total limit is the binding one");

struct meta_state {
    int64_t next_producer_id;
    uint32_t n_brokers;
    struct meta_broker brokers[META_BROKERS_MAX]; /* sorted by id */
    uint32_t n_topics;
    uint32_t topics_cap;
    struct meta_topic **topics; /* sorted by name */
    uint32_t n_partitions;      /* over all topics */
};

struct meta_fsm {
    struct raft_fsm fsm;
    const struct raft *raft;
    struct meta_state *st;
};

/* A string borrowed from the command being applied. */
struct sv {
    const char *p;
    uint32_t len;
};

/* Topics. */

static void topic_free(struct meta_topic *t)
{
    if (t == NULL) {
        return;
    }
    for (uint32_t i = 0; i < t->n_configs; i++) {
        kappa_free(t->configs[i].key);
        kappa_free(t->configs[i].value);
    }
    kappa_free(t->configs);
    kappa_free(t->partitions);
    kappa_free(t);
}

static void state_free(struct meta_state *st)
{
    if (st == NULL) {
        return;
    }
    for (uint32_t i = 0; i < st->n_topics; i++) {
        topic_free(st->topics[i]);
    }
    kappa_free(st->topics);
    kappa_free(st);
}

static int name_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0) {
        return c;
    }
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

/* Index of the topic, or where it would be inserted (*found = 0). */
static uint32_t topic_slot(const struct meta_state *st, const char *name,
                           size_t len, int *found)
{
    uint32_t lo = 0;
    uint32_t hi = st->n_topics;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const struct meta_topic *t = st->topics[mid];
        int c = name_cmp(t->name, strlen(t->name), name, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = 0;
    return lo;
}

static struct meta_topic *topic_find(const struct meta_state *st,
                                     const char *name, size_t len)
{
    int found;
    uint32_t i = topic_slot(st, name, len, &found);
    return found ? st->topics[i] : NULL;
}

static uint32_t broker_slot(const struct meta_state *st, uint32_t id,
                            int *found)
{
    uint32_t lo = 0;
    uint32_t hi = st->n_brokers;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (st->brokers[mid].id == id) {
            *found = 1;
            return mid;
        }
        if (st->brokers[mid].id < id) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    *found = 0;
    return lo;
}

static struct meta_broker *broker_find(struct meta_state *st, uint32_t id)
{
    int found;
    uint32_t i = broker_slot(st, id, &found);
    return found ? &st->brokers[i] : NULL;
}

int meta_topic_name_is_valid(const char *name, size_t len)
{
    return kappa_topic_name_is_valid(name, len);
}

static int config_key_is_valid(const struct sv *k)
{
    if (k->len == 0 || k->len > META_CONFIG_KEY_BYTES_MAX) {
        return 0;
    }
    for (uint32_t i = 0; i < k->len; i++) {
        char c = k->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

static int config_value_is_valid(const struct sv *v)
{
    return v->len <= META_CONFIG_VALUE_BYTES_MAX &&
           memchr(v->p, '\0', v->len) == NULL;
}

static char *dup_sv(const struct sv *s)
{
    char *p = kappa_malloc((size_t)s->len + 1);
    if (p != NULL) {
        memcpy(p, s->p, s->len);
        p[s->len] = '\0';
    }
    return p;
}

/* Replica counts: hosted[i] and led[i] for brokers[i]. */
static void count_load(const struct meta_state *st, uint32_t *hosted,
                       uint32_t *led)
{
    memset(hosted, 0, st->n_brokers * sizeof *hosted);
    memset(led, 0, st->n_brokers * sizeof *led);
    for (uint32_t t = 0; t < st->n_topics; t++) {
        const struct meta_topic *topic = st->topics[t];
        for (uint32_t p = 0; p < topic->n_partitions; p++) {
            const struct meta_partition *part = &topic->partitions[p];
            for (uint32_t j = 0; j < part->n_replicas; j++) {
                int found;
                uint32_t b = broker_slot(st, part->replicas[j], &found);
                if (found) {
                    hosted[b]++;
                    led[b] += j == 0;
                }
            }
        }
    }
}

/* Decommissioning brokers that host no replica become removed. */
static void settle_decommissioned(struct meta_state *st)
{
    uint32_t hosted[META_BROKERS_MAX];
    uint32_t led[META_BROKERS_MAX];
    int any = 0;
    for (uint32_t i = 0; i < st->n_brokers; i++) {
        any |= st->brokers[i].state == META_BROKER_DECOMMISSIONING;
    }
    if (!any) {
        return;
    }
    count_load(st, hosted, led);
    for (uint32_t i = 0; i < st->n_brokers; i++) {
        if (st->brokers[i].state == META_BROKER_DECOMMISSIONING &&
            hosted[i] == 0) {
            st->brokers[i].state = META_BROKER_REMOVED;
        }
    }
}

/* The eligible broker (index into eligible) that should lead the next
 * partition: fewest led partitions; ties go to the first one at or after
 * `from` in cyclic order, so equal loads give plain round-robin. */
static uint32_t next_leader(const uint32_t *eligible, uint32_t n_eligible,
                            const uint32_t *led, uint32_t from)
{
    uint32_t best = from % n_eligible;
    for (uint32_t k = 1; k < n_eligible; k++) {
        uint32_t e = (from + k) % n_eligible;
        if (led[eligible[e]] < led[eligible[best]]) {
            best = e;
        }
    }
    return best;
}

/* Fills parts[0 .. n_partitions) as described at the top of the file. */
static int place(const struct meta_state *st, uint32_t n_partitions,
                 uint32_t rf, int64_t min_heartbeat_ms,
                 struct meta_partition *parts)
{
    uint32_t hosted[META_BROKERS_MAX];
    uint32_t led[META_BROKERS_MAX];
    uint32_t eligible[META_BROKERS_MAX];
    uint32_t n_eligible = 0;
    uint32_t start = 0;

    count_load(st, hosted, led);
    for (uint32_t i = 0; i < st->n_brokers; i++) {
        const struct meta_broker *b = &st->brokers[i];
        if (b->state == META_BROKER_ALIVE &&
            b->last_heartbeat_ms >= min_heartbeat_ms) {
            eligible[n_eligible++] = i;
        }
    }
    if (rf > n_eligible) {
        return KAPPA_EREPLICATION;
    }
    for (uint32_t e = 1; e < n_eligible; e++) {
        uint32_t b = eligible[e];
        uint32_t s = eligible[start];
        if (led[b] < led[s] || (led[b] == led[s] && hosted[b] < hosted[s])) {
            start = e;
        }
    }
    for (uint32_t p = 0; p < n_partitions; p++) {
        struct meta_partition *part = &parts[p];
        uint32_t first = next_leader(eligible, n_eligible, led, start);
        memset(part, 0, sizeof *part);
        part->n_replicas = rf;
        for (uint32_t j = 0; j < rf; j++) {
            uint32_t b = eligible[(first + j) % n_eligible];
            part->replicas[j] = st->brokers[b].id;
            hosted[b]++;
        }
        led[eligible[first]]++;
        part->leader = part->replicas[0];
        part->leader_epoch = 0;
        start = first + 1;
    }
    return 0;
}

/* Decoding helpers for commands. */

static int read_sv(struct mp_reader *r, struct sv *s)
{
    return mp_read_str(r, &s->p, &s->len);
}

static int read_u32(struct mp_reader *r, uint32_t lo, uint32_t hi, uint32_t *v)
{
    int64_t x;
    int rv = mp_read_int_range(r, lo, hi, &x);
    *v = (uint32_t)x;
    return rv;
}

static int at_end(const struct mp_reader *r)
{
    return r->err == 0 && r->p == r->end;
}

/* Reads a map of up to META_CONFIGS_MAX config entries; nil values are
 * allowed only if allow_nil (then value.p is NULL). */
static int read_configs(struct mp_reader *r, int allow_nil, struct sv *keys,
                        struct sv *values, uint32_t *n)
{
    if (mp_read_map(r, n) != 0) {
        return KAPPA_EPROTO;
    }
    if (*n > META_CONFIGS_MAX) {
        return KAPPA_ETOOBIG;
    }
    for (uint32_t i = 0; i < *n; i++) {
        if (read_sv(r, &keys[i]) != 0) {
            return KAPPA_EPROTO;
        }
        if (allow_nil && mp_peek(r) == MP_NIL) {
            (void)mp_read_nil(r);
            values[i].p = NULL;
            values[i].len = 0;
        } else if (read_sv(r, &values[i]) != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

static int validate_configs(const struct sv *keys, const struct sv *values,
                            uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!config_key_is_valid(&keys[i]) ||
            (values[i].p != NULL && !config_value_is_valid(&values[i]))) {
            return KAPPA_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (name_cmp(keys[i].p, keys[i].len, keys[j].p, keys[j].len) == 0) {
                return KAPPA_EINVAL;
            }
        }
    }
    return 0;
}

/* Merges changes into a topic's configs (sorted by key), building a new
 * array so that nothing changes on failure. */
static int configs_merge(struct meta_topic *t, const struct sv *keys,
                         const struct sv *values, uint32_t n_changes)
{
    struct meta_config *next;
    uint32_t n_next = 0;
    uint32_t cap = t->n_configs + n_changes;
    int rv = KAPPA_ENOMEM;

    next = kappa_calloc(cap > 0 ? cap : 1, sizeof *next);
    if (next == NULL) {
        return KAPPA_ENOMEM;
    }
    /* Old entries not overridden, then every change that sets a value. */
    for (uint32_t i = 0; i < t->n_configs; i++) {
        const struct meta_config *c = &t->configs[i];
        int changed = 0;
        for (uint32_t j = 0; j < n_changes && !changed; j++) {
            changed =
                name_cmp(c->key, strlen(c->key), keys[j].p, keys[j].len) == 0;
        }
        if (!changed) {
            struct sv k = {c->key, (uint32_t)strlen(c->key)};
            struct sv v = {c->value, (uint32_t)strlen(c->value)};
            next[n_next].key = dup_sv(&k);
            next[n_next].value = dup_sv(&v);
            if (next[n_next].key == NULL || next[n_next].value == NULL) {
                n_next++;
                goto err;
            }
            n_next++;
        }
    }
    for (uint32_t j = 0; j < n_changes; j++) {
        if (values[j].p == NULL) {
            continue;
        }
        next[n_next].key = dup_sv(&keys[j]);
        next[n_next].value = dup_sv(&values[j]);
        n_next++;
        if (next[n_next - 1].key == NULL || next[n_next - 1].value == NULL) {
            goto err;
        }
    }
    if (n_next > META_CONFIGS_MAX) {
        rv = KAPPA_ETOOBIG;
        goto err;
    }
    /* Insertion sort by key: at most META_CONFIGS_MAX entries. */
    for (uint32_t i = 1; i < n_next; i++) {
        struct meta_config c = next[i];
        uint32_t j = i;
        while (j > 0 && strcmp(next[j - 1].key, c.key) > 0) {
            next[j] = next[j - 1];
            j--;
        }
        next[j] = c;
    }
    for (uint32_t i = 0; i < t->n_configs; i++) {
        kappa_free(t->configs[i].key);
        kappa_free(t->configs[i].value);
    }
    kappa_free(t->configs);
    t->configs = next;
    t->n_configs = n_next;
    return 0;

err:
    for (uint32_t i = 0; i < n_next; i++) {
        kappa_free(next[i].key);
        kappa_free(next[i].value);
    }
    kappa_free(next);
    return rv;
}

/* Commands. Each gets the reader positioned after the type and the array
 * length n (type included). */

static int apply_register(struct meta_state *st, struct mp_reader *r,
                          uint32_t n)
{
    struct sv client, cluster;
    struct meta_broker *b;
    uint32_t id;
    int64_t now_ms;
    int found;
    uint32_t slot;

    if (n != 5 || read_u32(r, 0, UINT32_MAX, &id) != 0 ||
        read_sv(r, &client) != 0 || read_sv(r, &cluster) != 0 ||
        mp_read_int(r, &now_ms) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    if (id == 0 || id > META_BROKER_ID_MAX || client.len == 0 ||
        client.len > META_ADDR_BYTES_MAX || cluster.len == 0 ||
        cluster.len > META_ADDR_BYTES_MAX ||
        memchr(client.p, '\0', client.len) != NULL ||
        memchr(cluster.p, '\0', cluster.len) != NULL) {
        return KAPPA_EINVAL;
    }
    slot = broker_slot(st, id, &found);
    if (!found) {
        if (st->n_brokers == META_BROKERS_MAX) {
            return KAPPA_ETOOBIG;
        }
        memmove(&st->brokers[slot + 1], &st->brokers[slot],
                (st->n_brokers - slot) * sizeof st->brokers[0]);
        st->n_brokers++;
        b = &st->brokers[slot];
        memset(b, 0, sizeof *b);
        b->id = id;
        b->state = META_BROKER_ALIVE;
        b->last_heartbeat_ms = now_ms;
    } else {
        b = &st->brokers[slot];
        if (b->state == META_BROKER_REMOVED) {
            b->state = META_BROKER_ALIVE;
        }
    }
    memcpy(b->client_addr, client.p, client.len);
    b->client_addr[client.len] = '\0';
    memcpy(b->cluster_addr, cluster.p, cluster.len);
    b->cluster_addr[cluster.len] = '\0';
    if (now_ms > b->last_heartbeat_ms) {
        b->last_heartbeat_ms = now_ms;
    }
    return 0;
}

static int apply_heartbeat(struct meta_state *st, struct mp_reader *r,
                           uint32_t n)
{
    struct meta_broker *b;
    uint32_t id;
    int64_t now_ms;
    if (n != 3 || read_u32(r, 0, UINT32_MAX, &id) != 0 ||
        mp_read_int(r, &now_ms) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    b = broker_find(st, id);
    if (b == NULL || b->state == META_BROKER_REMOVED) {
        return KAPPA_ENOENT;
    }
    if (now_ms > b->last_heartbeat_ms) {
        b->last_heartbeat_ms = now_ms;
    }
    return 0;
}

static int apply_decommission(struct meta_state *st, struct mp_reader *r,
                              uint32_t n)
{
    struct meta_broker *b;
    uint32_t id;
    if (n != 2 || read_u32(r, 0, UINT32_MAX, &id) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    b = broker_find(st, id);
    if (b == NULL) {
        return KAPPA_ENOENT;
    }
    if (b->state == META_BROKER_ALIVE) {
        b->state = META_BROKER_DECOMMISSIONING;
    }
    settle_decommissioned(st);
    return 0;
}

static int topics_reserve_one(struct meta_state *st)
{
    struct meta_topic **topics;
    uint32_t cap;
    if (st->n_topics < st->topics_cap) {
        return 0;
    }
    cap = st->topics_cap == 0 ? 16 : st->topics_cap * 2;
    if (cap > META_TOPICS_MAX) {
        cap = META_TOPICS_MAX;
    }
    topics = kappa_realloc(st->topics, (size_t)cap * sizeof *topics);
    if (topics == NULL) {
        return KAPPA_ENOMEM;
    }
    st->topics = topics;
    st->topics_cap = cap;
    return 0;
}

/* The validated fields of a create_topic command. */
struct create_args {
    struct sv name;
    uint32_t n_partitions;
    uint32_t rf;
    int64_t min_heartbeat_ms;
    uint32_t n_configs;
    struct sv keys[META_CONFIGS_MAX];
    struct sv values[META_CONFIGS_MAX];
};

static int decode_create(struct mp_reader *r, uint32_t n, struct create_args *a)
{
    int rv;
    if (n != 6 || read_sv(r, &a->name) != 0 ||
        read_u32(r, 0, UINT32_MAX, &a->n_partitions) != 0 ||
        read_u32(r, 0, UINT32_MAX, &a->rf) != 0) {
        return KAPPA_EPROTO;
    }
    rv = read_configs(r, 0, a->keys, a->values, &a->n_configs);
    if (rv != 0) {
        return rv;
    }
    if (mp_read_int(r, &a->min_heartbeat_ms) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    if (!meta_topic_name_is_valid(a->name.p, a->name.len)) {
        return KAPPA_ETOPIC_NAME;
    }
    if (a->n_partitions == 0 || a->rf == 0 || a->rf > META_REPLICAS_MAX) {
        return KAPPA_EINVAL;
    }
    if (a->n_partitions > META_TOPIC_PARTITIONS_MAX) {
        return KAPPA_ETOOBIG;
    }
    return validate_configs(a->keys, a->values, a->n_configs);
}

static struct meta_topic *topic_new(const struct create_args *a, uint64_t index)
{
    struct meta_topic *t = kappa_calloc(1, sizeof *t);
    if (t == NULL) {
        return NULL;
    }
    memcpy(t->name, a->name.p, a->name.len);
    t->name[a->name.len] = '\0';
    t->replication_factor = a->rf;
    t->created_index = index;
    t->partitions = kappa_calloc(a->n_partitions, sizeof *t->partitions);
    if (t->partitions == NULL ||
        configs_merge(t, a->keys, a->values, a->n_configs) != 0) {
        topic_free(t);
        return NULL;
    }
    t->n_partitions = a->n_partitions;
    return t;
}

static int apply_create(struct meta_state *st, uint64_t index,
                        struct mp_reader *r, uint32_t n, int64_t *value)
{
    struct create_args *a;
    struct meta_topic *t;
    uint32_t slot;
    int found;
    int rv;

    a = kappa_malloc(sizeof *a); /* 2 KB of views: keep it off the stack */
    if (a == NULL) {
        return KAPPA_ENOMEM;
    }
    rv = decode_create(r, n, a);
    if (rv != 0) {
        goto out;
    }
    slot = topic_slot(st, a->name.p, a->name.len, &found);
    if (found) {
        rv = KAPPA_ETOPIC_EXISTS;
        goto out;
    }
    if (st->n_topics == META_TOPICS_MAX ||
        a->n_partitions > META_PARTITIONS_MAX - st->n_partitions) {
        rv = KAPPA_ETOOBIG;
        goto out;
    }
    t = topic_new(a, index);
    if (t == NULL || topics_reserve_one(st) != 0) {
        topic_free(t);
        rv = KAPPA_ENOMEM;
        goto out;
    }
    rv = place(st, a->n_partitions, a->rf, a->min_heartbeat_ms, t->partitions);
    if (rv != 0) {
        topic_free(t);
        goto out;
    }
    memmove(&st->topics[slot + 1], &st->topics[slot],
            (st->n_topics - slot) * sizeof st->topics[0]);
    st->topics[slot] = t;
    st->n_topics++;
    st->n_partitions += t->n_partitions;
    *value = (int64_t)index;
out:
    kappa_free(a);
    return rv;
}

static int apply_delete(struct meta_state *st, struct mp_reader *r, uint32_t n)
{
    struct sv name;
    uint32_t slot;
    int found;
    if (n != 2 || read_sv(r, &name) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    slot = topic_slot(st, name.p, name.len, &found);
    if (!found) {
        return KAPPA_EUNKNOWN_TOPIC;
    }
    st->n_partitions -= st->topics[slot]->n_partitions;
    topic_free(st->topics[slot]);
    memmove(&st->topics[slot], &st->topics[slot + 1],
            (st->n_topics - slot - 1) * sizeof st->topics[0]);
    st->n_topics--;
    settle_decommissioned(st);
    return 0;
}

static int apply_alter(struct meta_state *st, struct mp_reader *r, uint32_t n)
{
    struct sv name;
    struct sv *kv;
    struct meta_topic *t;
    uint32_t n_changes;
    int rv;

    if (n != 3 || read_sv(r, &name) != 0) {
        return KAPPA_EPROTO;
    }
    kv = kappa_malloc(2 * META_CONFIGS_MAX * sizeof *kv);
    if (kv == NULL) {
        return KAPPA_ENOMEM;
    }
    rv = read_configs(r, 1, kv, kv + META_CONFIGS_MAX, &n_changes);
    if (rv == 0 && !at_end(r)) {
        rv = KAPPA_EPROTO;
    }
    if (rv == 0) {
        rv = validate_configs(kv, kv + META_CONFIGS_MAX, n_changes);
    }
    if (rv == 0) {
        t = topic_find(st, name.p, name.len);
        rv = t == NULL ? KAPPA_EUNKNOWN_TOPIC
                       : configs_merge(t, kv, kv + META_CONFIGS_MAX, n_changes);
    }
    kappa_free(kv);
    return rv;
}

/* Reads "name, partition" and finds the partition. */
static int read_partition(struct meta_state *st, struct mp_reader *r,
                          struct meta_partition **part)
{
    struct sv name;
    struct meta_topic *t;
    uint32_t p;
    if (read_sv(r, &name) != 0 || read_u32(r, 0, UINT32_MAX, &p) != 0) {
        return KAPPA_EPROTO;
    }
    t = topic_find(st, name.p, name.len);
    if (t == NULL) {
        *part = NULL;
        return KAPPA_EUNKNOWN_TOPIC;
    }
    *part = p < t->n_partitions ? &t->partitions[p] : NULL;
    return *part == NULL ? KAPPA_EBAD_PARTITION : 0;
}

static int has_replica(const struct meta_partition *part, uint32_t id)
{
    for (uint32_t j = 0; j < part->n_replicas; j++) {
        if (part->replicas[j] == id) {
            return 1;
        }
    }
    return 0;
}

static int validate_replicas(struct meta_state *st,
                             const struct meta_partition *old,
                             const uint32_t *replicas, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct meta_broker *b = broker_find(st, replicas[i]);
        if (b == NULL || b->state == META_BROKER_REMOVED) {
            return KAPPA_ENOENT;
        }
        /* A new replica must be alive; an existing one may stay while its
         * broker drains. */
        if (b->state != META_BROKER_ALIVE && !has_replica(old, replicas[i])) {
            return KAPPA_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (replicas[j] == replicas[i]) {
                return KAPPA_EINVAL;
            }
        }
    }
    return 0;
}

static int apply_reassign(struct meta_state *st, struct mp_reader *r,
                          uint32_t n)
{
    uint32_t replicas[META_REPLICAS_MAX];
    struct meta_partition *part;
    uint32_t n_replicas;
    int rv;

    if (n != 4) {
        return KAPPA_EPROTO;
    }
    rv = read_partition(st, r, &part);
    if (rv == KAPPA_EPROTO || mp_read_array(r, &n_replicas) != 0) {
        return KAPPA_EPROTO;
    }
    if (n_replicas == 0 || n_replicas > META_REPLICAS_MAX) {
        return KAPPA_EINVAL;
    }
    for (uint32_t i = 0; i < n_replicas; i++) {
        if (read_u32(r, 0, UINT32_MAX, &replicas[i]) != 0) {
            return KAPPA_EPROTO;
        }
    }
    if (!at_end(r)) {
        return KAPPA_EPROTO;
    }
    if (rv != 0) {
        return rv;
    }
    rv = validate_replicas(st, part, replicas, n_replicas);
    if (rv != 0) {
        return rv;
    }
    if (part->leader != 0) {
        int kept = 0;
        for (uint32_t i = 0; i < n_replicas; i++) {
            kept |= replicas[i] == part->leader;
        }
        if (!kept) {
            part->leader = 0; /* the next hint (any epoch above) sets it */
        }
    }
    memcpy(part->replicas, replicas, n_replicas * sizeof replicas[0]);
    part->n_replicas = n_replicas;
    settle_decommissioned(st);
    return 0;
}

static int apply_leader_hint(struct meta_state *st, struct mp_reader *r,
                             uint32_t n, int64_t *value)
{
    struct meta_partition *part;
    uint32_t leader;
    int64_t epoch;
    int rv;

    if (n != 5) {
        return KAPPA_EPROTO;
    }
    rv = read_partition(st, r, &part);
    if (rv == KAPPA_EPROTO || read_u32(r, 0, UINT32_MAX, &leader) != 0 ||
        mp_read_int_range(r, 0, INT64_MAX, &epoch) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    if (rv != 0) {
        return rv;
    }
    if (leader != 0 && !has_replica(part, leader)) {
        return KAPPA_EINVAL;
    }
    /* One leader per term: an older epoch, or another leader for the same
     * epoch, is stale and ignored. */
    if ((uint64_t)epoch < part->leader_epoch ||
        ((uint64_t)epoch == part->leader_epoch && leader != part->leader &&
         part->leader != 0)) {
        *value = 0;
        return 0;
    }
    part->leader = leader;
    part->leader_epoch = (uint64_t)epoch;
    *value = 1;
    return 0;
}

static int apply_allocate(struct meta_state *st, struct mp_reader *r,
                          uint32_t n, int64_t *value)
{
    uint32_t count;
    if (n != 2 || read_u32(r, 0, UINT32_MAX, &count) != 0 || !at_end(r)) {
        return KAPPA_EPROTO;
    }
    if (count == 0 || count > META_PRODUCER_IDS_BLOCK_MAX) {
        return KAPPA_EINVAL;
    }
    if (st->next_producer_id > INT64_MAX - (int64_t)count) {
        return KAPPA_ETOOBIG;
    }
    *value = st->next_producer_id;
    st->next_producer_id += count;
    return 0;
}

int meta_fsm_apply_cmd(struct meta_fsm *m, uint64_t index, const void *cmd,
                       size_t len, int64_t *value)
{
    struct meta_state *st = m->st;
    struct mp_reader r;
    uint32_t n;
    uint64_t type;

    *value = 0;
    mp_reader_init(&r, cmd, len);
    if (mp_read_array(&r, &n) != 0 || n == 0 || mp_read_uint(&r, &type) != 0) {
        return KAPPA_EPROTO;
    }
    switch (type) {
    case META_CMD_REGISTER_BROKER:
        return apply_register(st, &r, n);
    case META_CMD_BROKER_HEARTBEAT:
        return apply_heartbeat(st, &r, n);
    case META_CMD_DECOMMISSION_BROKER:
        return apply_decommission(st, &r, n);
    case META_CMD_CREATE_TOPIC:
        return apply_create(st, index, &r, n, value);
    case META_CMD_DELETE_TOPIC:
        return apply_delete(st, &r, n);
    case META_CMD_ALTER_TOPIC_CONFIG:
        return apply_alter(st, &r, n);
    case META_CMD_REASSIGN_PARTITION:
        return apply_reassign(st, &r, n);
    case META_CMD_SET_LEADER_HINT:
        return apply_leader_hint(st, &r, n, value);
    case META_CMD_ALLOCATE_PRODUCER_IDS:
        return apply_allocate(st, &r, n, value);
    default:
        return KAPPA_EPROTO;
    }
}

int meta_fsm_result(const void *result, int64_t *value)
{
    intptr_t v = (intptr_t)result;
    if (v < 0) {
        *value = 0;
        return (int)-v;
    }
    *value = (int64_t)v;
    return 0;
}

/* Command encoders. */

static void put_configs(struct mp_writer *w, const struct meta_config_kv *kv,
                        uint32_t n)
{
    mp_put_map(w, n);
    for (uint32_t i = 0; i < n; i++) {
        mp_put_str(w, kv[i].key);
        if (kv[i].value == NULL) {
            mp_put_nil(w);
        } else {
            mp_put_str(w, kv[i].value);
        }
    }
}

int meta_cmd_register_broker(struct buf *out, uint32_t id,
                             const char *client_addr, const char *cluster_addr,
                             int64_t now_ms)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 5);
    mp_put_uint(&w, META_CMD_REGISTER_BROKER);
    mp_put_uint(&w, id);
    mp_put_str(&w, client_addr);
    mp_put_str(&w, cluster_addr);
    mp_put_int(&w, now_ms);
    return w.err;
}

int meta_cmd_broker_heartbeat(struct buf *out, uint32_t id, int64_t now_ms)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 3);
    mp_put_uint(&w, META_CMD_BROKER_HEARTBEAT);
    mp_put_uint(&w, id);
    mp_put_int(&w, now_ms);
    return w.err;
}

int meta_cmd_decommission_broker(struct buf *out, uint32_t id)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 2);
    mp_put_uint(&w, META_CMD_DECOMMISSION_BROKER);
    mp_put_uint(&w, id);
    return w.err;
}

int meta_cmd_create_topic(struct buf *out, const char *name,
                          uint32_t n_partitions, uint32_t replication_factor,
                          const struct meta_config_kv *configs,
                          uint32_t n_configs, int64_t min_heartbeat_ms)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 6);
    mp_put_uint(&w, META_CMD_CREATE_TOPIC);
    mp_put_str(&w, name);
    mp_put_uint(&w, n_partitions);
    mp_put_uint(&w, replication_factor);
    put_configs(&w, configs, n_configs);
    mp_put_int(&w, min_heartbeat_ms);
    return w.err;
}

int meta_cmd_delete_topic(struct buf *out, const char *name)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 2);
    mp_put_uint(&w, META_CMD_DELETE_TOPIC);
    mp_put_str(&w, name);
    return w.err;
}

int meta_cmd_alter_topic_config(struct buf *out, const char *name,
                                const struct meta_config_kv *changes,
                                uint32_t n_changes)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 3);
    mp_put_uint(&w, META_CMD_ALTER_TOPIC_CONFIG);
    mp_put_str(&w, name);
    put_configs(&w, changes, n_changes);
    return w.err;
}

int meta_cmd_reassign_partition(struct buf *out, const char *name,
                                uint32_t partition, const uint32_t *replicas,
                                uint32_t n_replicas)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 4);
    mp_put_uint(&w, META_CMD_REASSIGN_PARTITION);
    mp_put_str(&w, name);
    mp_put_uint(&w, partition);
    mp_put_array(&w, n_replicas);
    for (uint32_t i = 0; i < n_replicas; i++) {
        mp_put_uint(&w, replicas[i]);
    }
    return w.err;
}

int meta_cmd_set_leader_hint(struct buf *out, const char *name,
                             uint32_t partition, uint32_t leader,
                             uint64_t leader_epoch)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 5);
    mp_put_uint(&w, META_CMD_SET_LEADER_HINT);
    mp_put_str(&w, name);
    mp_put_uint(&w, partition);
    mp_put_uint(&w, leader);
    mp_put_uint(&w, leader_epoch);
    return w.err;
}

int meta_cmd_allocate_producer_ids(struct buf *out, uint32_t n)
{
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 2);
    mp_put_uint(&w, META_CMD_ALLOCATE_PRODUCER_IDS);
    mp_put_uint(&w, n);
    return w.err;
}

/* Snapshot. */

static void encode_topic(struct mp_writer *w, const struct meta_topic *t)
{
    mp_put_array(w, 5);
    mp_put_str(w, t->name);
    mp_put_uint(w, t->replication_factor);
    mp_put_uint(w, t->created_index);
    mp_put_map(w, t->n_configs);
    for (uint32_t i = 0; i < t->n_configs; i++) {
        mp_put_str(w, t->configs[i].key);
        mp_put_str(w, t->configs[i].value);
    }
    mp_put_array(w, t->n_partitions);
    for (uint32_t p = 0; p < t->n_partitions; p++) {
        const struct meta_partition *part = &t->partitions[p];
        mp_put_array(w, 3);
        mp_put_array(w, part->n_replicas);
        for (uint32_t j = 0; j < part->n_replicas; j++) {
            mp_put_uint(w, part->replicas[j]);
        }
        mp_put_uint(w, part->leader);
        mp_put_uint(w, part->leader_epoch);
    }
}

int meta_fsm_encode(const struct meta_fsm *m, struct buf *out)
{
    const struct meta_state *st = m->st;
    struct mp_writer w;
    mp_writer_init(&w, out);
    mp_put_array(&w, 4);
    mp_put_uint(&w, FORMAT_VERSION);
    mp_put_uint(&w, (uint64_t)st->next_producer_id);
    mp_put_array(&w, st->n_brokers);
    for (uint32_t i = 0; i < st->n_brokers; i++) {
        const struct meta_broker *b = &st->brokers[i];
        mp_put_array(&w, 5);
        mp_put_uint(&w, b->id);
        mp_put_str(&w, b->client_addr);
        mp_put_str(&w, b->cluster_addr);
        mp_put_uint(&w, (uint64_t)b->state);
        mp_put_int(&w, b->last_heartbeat_ms);
    }
    mp_put_array(&w, st->n_topics);
    for (uint32_t i = 0; i < st->n_topics; i++) {
        encode_topic(&w, st->topics[i]);
    }
    return w.err;
}

static int decode_broker(struct mp_reader *r, struct meta_broker *b)
{
    uint32_t n;
    int64_t state;
    if (mp_read_array(r, &n) != 0 || n != 5 ||
        read_u32(r, 1, META_BROKER_ID_MAX, &b->id) != 0 ||
        mp_read_cstr(r, b->client_addr, sizeof b->client_addr) != 0 ||
        mp_read_cstr(r, b->cluster_addr, sizeof b->cluster_addr) != 0 ||
        mp_read_int_range(r, META_BROKER_ALIVE, META_BROKER_REMOVED, &state) !=
            0 ||
        mp_read_int(r, &b->last_heartbeat_ms) != 0) {
        return KAPPA_EPROTO;
    }
    b->state = (enum meta_broker_state)state;
    return 0;
}

static int decode_partition(struct mp_reader *r, struct meta_partition *part)
{
    uint32_t n;
    int64_t epoch;
    if (mp_read_array(r, &n) != 0 || n != 3 ||
        mp_read_array(r, &part->n_replicas) != 0 || part->n_replicas == 0 ||
        part->n_replicas > META_REPLICAS_MAX) {
        return KAPPA_EPROTO;
    }
    for (uint32_t j = 0; j < part->n_replicas; j++) {
        if (read_u32(r, 1, META_BROKER_ID_MAX, &part->replicas[j]) != 0) {
            return KAPPA_EPROTO;
        }
        for (uint32_t k = 0; k < j; k++) {
            if (part->replicas[k] == part->replicas[j]) {
                return KAPPA_EPROTO;
            }
        }
    }
    if (read_u32(r, 0, META_BROKER_ID_MAX, &part->leader) != 0 ||
        mp_read_int_range(r, 0, INT64_MAX, &epoch) != 0 ||
        (part->leader != 0 && !has_replica(part, part->leader))) {
        return KAPPA_EPROTO;
    }
    part->leader_epoch = (uint64_t)epoch;
    return 0;
}

static int decode_topic_configs(struct mp_reader *r, struct meta_topic *t)
{
    struct sv keys[META_CONFIGS_MAX];
    struct sv values[META_CONFIGS_MAX];
    uint32_t n;
    int rv = read_configs(r, 0, keys, values, &n);
    if (rv != 0 || validate_configs(keys, values, n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 1; i < n; i++) {
        if (name_cmp(keys[i - 1].p, keys[i - 1].len, keys[i].p, keys[i].len) >=
            0) {
            return KAPPA_EPROTO; /* not canonical */
        }
    }
    return configs_merge(t, keys, values, n);
}

/* Decodes one topic into *out; total counts partitions so far. */
static int decode_topic(struct mp_reader *r, uint32_t *total,
                        struct meta_topic **out)
{
    struct meta_topic *t;
    struct sv name;
    uint32_t n, n_parts;
    int64_t index;
    int rv = KAPPA_EPROTO;

    if (mp_read_array(r, &n) != 0 || n != 5 || read_sv(r, &name) != 0 ||
        !meta_topic_name_is_valid(name.p, name.len)) {
        return KAPPA_EPROTO;
    }
    t = kappa_calloc(1, sizeof *t);
    if (t == NULL) {
        return KAPPA_ENOMEM;
    }
    memcpy(t->name, name.p, name.len);
    if (read_u32(r, 1, META_REPLICAS_MAX, &t->replication_factor) != 0 ||
        mp_read_int_range(r, 0, INT64_MAX, &index) != 0) {
        goto err;
    }
    t->created_index = (uint64_t)index;
    rv = decode_topic_configs(r, t);
    if (rv != 0) {
        goto err;
    }
    rv = KAPPA_EPROTO;
    if (mp_read_array(r, &n_parts) != 0 || n_parts == 0 ||
        n_parts > META_TOPIC_PARTITIONS_MAX ||
        n_parts > META_PARTITIONS_MAX - *total) {
        goto err;
    }
    t->partitions = kappa_calloc(n_parts, sizeof *t->partitions);
    if (t->partitions == NULL) {
        rv = KAPPA_ENOMEM;
        goto err;
    }
    t->n_partitions = n_parts;
    for (uint32_t p = 0; p < n_parts; p++) {
        if (decode_partition(r, &t->partitions[p]) != 0) {
            goto err;
        }
    }
    *total += n_parts;
    *out = t;
    return 0;
err:
    topic_free(t);
    return rv;
}

static int decode_brokers(struct mp_reader *r, struct meta_state *st)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0 || n > META_BROKERS_MAX) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (decode_broker(r, &st->brokers[i]) != 0 ||
            (i > 0 && st->brokers[i].id <= st->brokers[i - 1].id)) {
            return KAPPA_EPROTO;
        }
    }
    st->n_brokers = n;
    return 0;
}

static int decode_topics(struct mp_reader *r, struct meta_state *st)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0 || n > META_TOPICS_MAX) {
        return KAPPA_EPROTO;
    }
    if (n > 0) {
        st->topics = kappa_calloc(n, sizeof *st->topics);
        if (st->topics == NULL) {
            return KAPPA_ENOMEM;
        }
        st->topics_cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        int rv = decode_topic(r, &st->n_partitions, &st->topics[i]);
        if (rv != 0) {
            return rv;
        }
        st->n_topics++;
        if (i > 0) {
            const struct meta_topic *a = st->topics[i - 1];
            const struct meta_topic *b = st->topics[i];
            if (strcmp(a->name, b->name) >= 0) {
                return KAPPA_EPROTO;
            }
        }
    }
    return 0;
}

int meta_fsm_decode(struct meta_fsm *m, const void *data, size_t len)
{
    struct meta_state *st;
    struct mp_reader r;
    uint32_t n;
    int64_t version;
    int rv;

    if (len > META_SNAPSHOT_BYTES_MAX) {
        return KAPPA_EPROTO;
    }
    st = kappa_calloc(1, sizeof *st);
    if (st == NULL) {
        return KAPPA_ENOMEM;
    }
    mp_reader_init(&r, data, len);
    rv = KAPPA_EPROTO;
    if (mp_read_array(&r, &n) != 0 || n != 4 ||
        mp_read_int_range(&r, FORMAT_VERSION, FORMAT_VERSION, &version) != 0 ||
        mp_read_int_range(&r, 0, INT64_MAX, &st->next_producer_id) != 0) {
        goto err;
    }
    rv = decode_brokers(&r, st);
    if (rv == 0) {
        rv = decode_topics(&r, st);
    }
    if (rv == 0 && !at_end(&r)) {
        rv = KAPPA_EPROTO;
    }
    if (rv != 0) {
        goto err;
    }
    state_free(m->st);
    m->st = st;
    return 0;
err:
    state_free(st);
    return rv;
}

/* raft_fsm glue. */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct meta_fsm *m = fsm->data;
    uint64_t index = m->raft != NULL ? m->raft->last_applied + 1 : 0;
    int64_t value;
    int rv = meta_fsm_apply_cmd(m, index, buf->base, buf->len, &value);
    if (rv == KAPPA_ENOMEM) {
        return RAFT_NOMEM;
    }
    *result = rv != 0 ? (void *)(intptr_t)-rv : (void *)(intptr_t)value;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct meta_fsm *m = fsm->data;
    struct buf out = {0};
    struct raft_buffer *b;

    if (meta_fsm_encode(m, &out) != 0) {
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
    struct meta_fsm *m = fsm->data;
    int rv = meta_fsm_decode(m, buf->base, buf->len);
    if (rv == KAPPA_ENOMEM) {
        return RAFT_NOMEM;
    }
    if (rv != 0) {
        return RAFT_CORRUPT;
    }
    raft_free(buf->base); /* ours on success; raft frees it on failure */
    return 0;
}

struct meta_fsm *meta_fsm_new(void)
{
    struct meta_fsm *m = kappa_calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    m->st = kappa_calloc(1, sizeof *m->st);
    if (m->st == NULL) {
        kappa_free(m);
        return NULL;
    }
    m->fsm.version = 2;
    m->fsm.data = m;
    m->fsm.apply = fsm_apply;
    m->fsm.snapshot = fsm_snapshot;
    m->fsm.snapshot_finalize = fsm_snapshot_finalize;
    m->fsm.restore = fsm_restore;
    return m;
}

void meta_fsm_free(struct meta_fsm *m)
{
    if (m == NULL) {
        return;
    }
    state_free(m->st);
    kappa_free(m);
}

struct raft_fsm *meta_fsm_raft(struct meta_fsm *m)
{
    return &m->fsm;
}

void meta_fsm_attach(struct meta_fsm *m, const struct raft *r)
{
    m->raft = r;
}

/* Queries. */

uint32_t meta_fsm_n_brokers(const struct meta_fsm *m)
{
    return m->st->n_brokers;
}

const struct meta_broker *meta_fsm_broker_at(const struct meta_fsm *m,
                                             uint32_t i)
{
    return i < m->st->n_brokers ? &m->st->brokers[i] : NULL;
}

const struct meta_broker *meta_fsm_broker(const struct meta_fsm *m, uint32_t id)
{
    return broker_find(m->st, id);
}

uint32_t meta_fsm_n_topics(const struct meta_fsm *m)
{
    return m->st->n_topics;
}

const struct meta_topic *meta_fsm_topic_at(const struct meta_fsm *m, uint32_t i)
{
    return i < m->st->n_topics ? m->st->topics[i] : NULL;
}

const struct meta_topic *meta_fsm_topic(const struct meta_fsm *m,
                                        const char *name, size_t len)
{
    return topic_find(m->st, name, len);
}

const struct meta_partition *meta_fsm_partition(const struct meta_fsm *m,
                                                const char *name, size_t len,
                                                uint32_t partition)
{
    const struct meta_topic *t = topic_find(m->st, name, len);
    if (t == NULL || partition >= t->n_partitions) {
        return NULL;
    }
    return &t->partitions[partition];
}

const char *meta_topic_config(const struct meta_topic *t, const char *key)
{
    for (uint32_t i = 0; i < t->n_configs; i++) {
        if (strcmp(t->configs[i].key, key) == 0) {
            return t->configs[i].value;
        }
    }
    return NULL;
}

int64_t meta_fsm_next_producer_id(const struct meta_fsm *m)
{
    return m->st->next_producer_id;
}

uint32_t meta_fsm_n_partitions(const struct meta_fsm *m)
{
    return m->st->n_partitions;
}
