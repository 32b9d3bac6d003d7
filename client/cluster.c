/* Cluster calls (blocking): kappa_describe_cluster (Metadata) and
 * kappa_cluster_status (Metadata, then ClusterStatus on every broker,
 * merged).
 *
 * Happy path: Metadata goes through admin_call and is copied into a
 * caller-owned kappa_cluster_info. For the status, one ClusterStatus
 * request per listed broker goes out at once on that broker's connection;
 * the loop runs until every request finished (answer, error or deadline),
 * each answer is decoded into a private node view, and the views are
 * merged: a broker's cluster address and state come from the metadata
 * leader's view when it answered (else the first that did), a partition's
 * watermark, indexes and follower lag from its leader's row, each
 * replica's own high watermark from its own row.
 *
 * Failure modes: Metadata errors fail the call (admin_call retries
 * transport failures until the timeout). A broker that cannot be reached,
 * times out or answers with an error or malformed status is listed with
 * is_alive 0 (1 for an error answer) and a message in error; its status
 * columns stay unknown. */
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"

#define TOPIC_NAME_MAX 249
/* Replica ids per partition, followers per row, rows per node. */
#define REPLICAS_MAX    64
#define STATUS_ROWS_MAX (KCLIENT_PARTITIONS_MAX * 16)

/* ---- Decoding helpers -----------------------------------------------------
 */

/* Handles one key of a map; must consume its value (mp_skip if unknown). */
typedef int (*field_fn)(struct mp_reader *r, const char *key, uint32_t key_len,
                        void *obj);

static int read_map(struct mp_reader *r, field_fn fn, void *obj)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if ((rv = fn(r, k, kl, obj)) != 0) {
            return rv;
        }
    }
    return 0;
}

/* Reads an array of at most max maps into a new zeroed array of elements of
 * elem_size bytes; init (may be NULL) prepares each element before fn reads
 * its fields. On error *items holds the elements read so far (*n of them,
 * counting the failed one). */
static int read_maps(struct mp_reader *r, uint32_t max, size_t elem_size,
                     void **items, size_t *n, void (*init)(void *), field_fn fn)
{
    uint32_t count;
    char *a;
    if (mp_read_array(r, &count) != 0 || count > max) {
        return KAPPA_EPROTO;
    }
    a = kappa_calloc(count > 0 ? count : 1, elem_size);
    if (a == NULL) {
        return KAPPA_ENOMEM;
    }
    *items = a;
    for (uint32_t i = 0; i < count; i++) {
        int rv;
        *n = i + 1;
        if (init != NULL) {
            init(a + i * elem_size);
        }
        if ((rv = read_map(r, fn, a + i * elem_size)) != 0) {
            return rv;
        }
    }
    *n = count;
    return 0;
}

static int read_i64(struct mp_reader *r, int64_t *v)
{
    return mp_read_int(r, v) == 0 ? 0 : KAPPA_EPROTO;
}

static int read_i32(struct mp_reader *r, int32_t *v)
{
    int64_t x;
    if (mp_read_int_range(r, -1, INT32_MAX, &x) != 0) {
        return KAPPA_EPROTO;
    }
    *v = (int32_t)x;
    return 0;
}

/* A string into dst, truncated to cap - 1 bytes. */
static int read_str(struct mp_reader *r, char *dst, size_t cap)
{
    const char *s;
    uint32_t len;
    if (mp_read_str(r, &s, &len) != 0) {
        return KAPPA_EPROTO;
    }
    snprintf(dst, cap, "%.*s", (int)(len < cap ? len : cap - 1), s);
    return 0;
}

static void put_map0(struct mp_writer *w, const void *args)
{
    (void)args;
    mp_put_map(w, 0);
}

/* ---- Metadata into kappa_cluster_info ------------------------------------ */

static int broker_field(struct mp_reader *r, const char *k, uint32_t kl,
                        void *obj)
{
    struct kappa_broker_info *b = obj;
    int64_t v;
    if (mp_key_is(k, kl, "id")) {
        return read_i32(r, &b->id);
    }
    if (mp_key_is(k, kl, "host")) {
        return read_str(r, b->host, sizeof b->host);
    }
    if (mp_key_is(k, kl, "port")) {
        if (mp_read_int_range(r, 0, 65535, &v) != 0) {
            return KAPPA_EPROTO;
        }
        b->port = (int)v;
        return 0;
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void broker_init(void *obj)
{
    ((struct kappa_broker_info *)obj)->id = -1;
}

static int replicas_read(struct mp_reader *r, struct kappa_partition_state *p)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0 || n > REPLICAS_MAX || p->replicas != NULL) {
        return KAPPA_EPROTO;
    }
    p->replicas = kappa_calloc(n > 0 ? n : 1, sizeof *p->replicas);
    if (p->replicas == NULL) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct kappa_replica_info *ri = &p->replicas[i];
        ri->high_watermark = ri->match_index = ri->lag = -1;
        if (read_i32(r, &ri->id) != 0) {
            return KAPPA_EPROTO;
        }
        p->n_replicas = i + 1;
    }
    return 0;
}

static int partition_field(struct mp_reader *r, const char *k, uint32_t kl,
                           void *obj)
{
    struct kappa_partition_state *p = obj;
    int32_t v = 0;
    if (mp_key_is(k, kl, "partition")) {
        return read_i32(r, &p->partition);
    }
    if (mp_key_is(k, kl, "leader")) {
        return read_i32(r, &p->leader);
    }
    if (mp_key_is(k, kl, "error")) {
        int rv = read_i32(r, &v);
        p->err = v;
        return rv;
    }
    if (mp_key_is(k, kl, "replicas")) {
        return replicas_read(r, p);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void partition_init(void *obj)
{
    struct kappa_partition_state *p = obj;
    p->partition = p->leader = -1;
    p->high_watermark = p->commit_index = p->last_index = -1;
}

static int topic_field(struct mp_reader *r, const char *k, uint32_t kl,
                       void *obj)
{
    struct kappa_topic_state *t = obj;
    if (mp_key_is(k, kl, "name") && t->name == NULL) {
        char name[TOPIC_NAME_MAX + 1];
        if (mp_read_cstr(r, name, sizeof name) != 0) {
            return KAPPA_EPROTO;
        }
        t->name = kappa_strdup(name);
        return t->name != NULL ? 0 : KAPPA_ENOMEM;
    }
    if (mp_key_is(k, kl, "error")) {
        int32_t v = 0;
        int rv = read_i32(r, &v);
        t->err = v;
        return rv;
    }
    if (mp_key_is(k, kl, "partitions") && t->partitions == NULL) {
        return read_maps(r, KCLIENT_PARTITIONS_MAX, sizeof *t->partitions,
                         (void **)&t->partitions, &t->n_partitions,
                         partition_init, partition_field);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static int info_field(struct mp_reader *r, const char *k, uint32_t kl,
                      void *obj)
{
    struct kappa_cluster_info *info = obj;
    if (mp_key_is(k, kl, "brokers") && info->brokers == NULL) {
        return read_maps(r, KCLIENT_CONNS_MAX, sizeof *info->brokers,
                         (void **)&info->brokers, &info->n_brokers, broker_init,
                         broker_field);
    }
    if (mp_key_is(k, kl, "controller")) {
        return read_i32(r, &info->controller);
    }
    if (mp_key_is(k, kl, "topics") && info->topics == NULL) {
        return read_maps(r, KCLIENT_TOPICS_MAX, sizeof *info->topics,
                         (void **)&info->topics, &info->n_topics, NULL,
                         topic_field);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static int parse_metadata(struct mp_reader *r, void *out)
{
    struct kappa_cluster_info *info = out;
    int rv = read_map(r, info_field, info);
    for (size_t i = 0; rv == 0 && i < info->n_topics; i++) {
        if (info->topics[i].name == NULL) {
            rv = KAPPA_EPROTO;
        }
    }
    return rv;
}

void kappa_cluster_info_free(struct kappa_cluster_info *info)
{
    if (info == NULL) {
        return;
    }
    for (size_t i = 0; i < info->n_topics; i++) {
        struct kappa_topic_state *t = &info->topics[i];
        for (size_t p = 0; p < t->n_partitions; p++) {
            kappa_free(t->partitions[p].replicas);
        }
        kappa_free(t->partitions);
        kappa_free(t->name);
    }
    kappa_free(info->topics);
    kappa_free(info->brokers);
    kappa_free(info);
}

static int describe(struct kappa_client *c, struct kappa_cluster_info **out,
                    int timeout_ms)
{
    struct kappa_cluster_info *info = kappa_calloc(1, sizeof *info);
    int rv;
    *out = NULL;
    if (info == NULL) {
        return client_error(c, KAPPA_ENOMEM, "describe cluster");
    }
    info->controller = -1;
    info->controller_term = -1;
    rv = admin_call(c, WIRE_API_METADATA, put_map0, NULL, parse_metadata, info,
                    timeout_ms);
    if (rv != 0) {
        kappa_cluster_info_free(info);
        return client_error(c, rv, "describe cluster");
    }
    *out = info;
    return 0;
}

int kappa_describe_cluster(struct kappa_client *c,
                           struct kappa_cluster_info **out, int timeout_ms)
{
    client_begin(c);
    return describe(c, out, timeout_ms);
}

/* ---- ClusterStatus answers ----------------------------------------------- */

struct st_follower {
    int32_t id;
    int64_t match_index, lag;
};

struct st_row {
    char topic[TOPIC_NAME_MAX + 1];
    int32_t partition;
    int64_t high_watermark, commit_index, last_index;
    struct st_follower *followers;
    size_t n_followers;
};

struct st_broker {
    int32_t id;
    char cluster_addr[KAPPA_CLUSTER_ADDR_MAX];
    char state[24];
};

/* One broker's answer, decoded. */
struct st_node {
    struct kappa_broker_info *b; /* the broker asked */
    size_t *n_pending;           /* requests not finished yet */
    int has_status;              /* answered without error and decoded */
    int is_single;
    char meta_state[24];
    int64_t meta_term;
    struct st_broker *brokers;
    size_t n_brokers;
    struct st_row *rows;
    size_t n_rows;
};

static int follower_field(struct mp_reader *r, const char *k, uint32_t kl,
                          void *obj)
{
    struct st_follower *f = obj;
    if (mp_key_is(k, kl, "id")) {
        return read_i32(r, &f->id);
    }
    if (mp_key_is(k, kl, "match_index")) {
        return read_i64(r, &f->match_index);
    }
    if (mp_key_is(k, kl, "lag")) {
        return read_i64(r, &f->lag);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void follower_init(void *obj)
{
    struct st_follower *f = obj;
    f->id = -1;
    f->match_index = f->lag = -1;
}

static int row_field(struct mp_reader *r, const char *k, uint32_t kl, void *obj)
{
    struct st_row *row = obj;
    if (mp_key_is(k, kl, "topic")) {
        return read_str(r, row->topic, sizeof row->topic);
    }
    if (mp_key_is(k, kl, "partition")) {
        return read_i32(r, &row->partition);
    }
    if (mp_key_is(k, kl, "high_watermark")) {
        return read_i64(r, &row->high_watermark);
    }
    if (mp_key_is(k, kl, "commit_index")) {
        return read_i64(r, &row->commit_index);
    }
    if (mp_key_is(k, kl, "last_index")) {
        return read_i64(r, &row->last_index);
    }
    if (mp_key_is(k, kl, "followers") && row->followers == NULL) {
        return read_maps(r, REPLICAS_MAX, sizeof *row->followers,
                         (void **)&row->followers, &row->n_followers,
                         follower_init, follower_field);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void row_init(void *obj)
{
    struct st_row *row = obj;
    row->partition = -1;
    row->high_watermark = row->commit_index = row->last_index = -1;
}

static int st_broker_field(struct mp_reader *r, const char *k, uint32_t kl,
                           void *obj)
{
    struct st_broker *b = obj;
    if (mp_key_is(k, kl, "id")) {
        return read_i32(r, &b->id);
    }
    if (mp_key_is(k, kl, "cluster_addr")) {
        return read_str(r, b->cluster_addr, sizeof b->cluster_addr);
    }
    if (mp_key_is(k, kl, "state")) {
        return read_str(r, b->state, sizeof b->state);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void st_broker_init(void *obj)
{
    ((struct st_broker *)obj)->id = -1;
}

static int meta_field(struct mp_reader *r, const char *k, uint32_t kl,
                      void *obj)
{
    struct st_node *n = obj;
    if (mp_key_is(k, kl, "state")) {
        return read_str(r, n->meta_state, sizeof n->meta_state);
    }
    if (mp_key_is(k, kl, "term")) {
        return read_i64(r, &n->meta_term);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static int node_field(struct mp_reader *r, const char *k, uint32_t kl,
                      void *obj)
{
    struct st_node *n = obj;
    if (mp_key_is(k, kl, "mode")) {
        char mode[16];
        int rv = read_str(r, mode, sizeof mode);
        n->is_single = rv == 0 && strcmp(mode, "single") == 0;
        return rv;
    }
    if (mp_key_is(k, kl, "meta") && mp_peek(r) == MP_MAP) {
        return read_map(r, meta_field, n);
    }
    if (mp_key_is(k, kl, "brokers") && n->brokers == NULL) {
        return read_maps(r, KCLIENT_CONNS_MAX, sizeof *n->brokers,
                         (void **)&n->brokers, &n->n_brokers, st_broker_init,
                         st_broker_field);
    }
    if (mp_key_is(k, kl, "partitions") && n->rows == NULL) {
        return read_maps(r, STATUS_ROWS_MAX, sizeof *n->rows, (void **)&n->rows,
                         &n->n_rows, row_init, row_field);
    }
    return mp_skip(r) == 0 ? 0 : KAPPA_EPROTO;
}

static void st_node_clear(struct st_node *n)
{
    for (size_t i = 0; i < n->n_rows; i++) {
        kappa_free(n->rows[i].followers);
    }
    kappa_free(n->rows);
    kappa_free(n->brokers);
    n->rows = NULL;
    n->brokers = NULL;
    n->n_rows = n->n_brokers = 0;
}

static void on_status(struct kreq *req, int rv, struct kresp *resp)
{
    struct st_node *n = req->arg;
    struct kappa_broker_info *b = n->b;
    (*n->n_pending)--;
    if (rv != 0) {
        snprintf(b->error, sizeof b->error, "%s", req->conn->errmsg);
        return;
    }
    b->is_alive = 1;
    if (resp->h.error_code != 0) {
        snprintf(b->error, sizeof b->error, "ClusterStatus: error %d %.*s",
                 resp->h.error_code,
                 resp->h.message != NULL ? (int)resp->h.message_len : 0,
                 resp->h.message != NULL ? resp->h.message : "");
        return;
    }
    rv = read_map(&resp->result, node_field, n);
    if (rv != 0) {
        st_node_clear(n);
        b->is_alive = 0;
        snprintf(b->error, sizeof b->error, "ClusterStatus: %s",
                 kappa_err_str(rv));
        return;
    }
    n->has_status = 1;
    if (n->meta_state[0] != '\0') {
        snprintf(b->metadata_role, sizeof b->metadata_role, "%s",
                 n->meta_state);
    } else if (n->is_single) {
        snprintf(b->metadata_role, sizeof b->metadata_role, "leader");
    }
}

static int none_pending(struct kappa_client *c, void *arg)
{
    (void)c;
    return *(size_t *)arg == 0;
}

/* Sends ClusterStatus to every broker of info and waits for all. */
static int ask_all(struct kappa_client *c, struct kappa_cluster_info *info,
                   struct st_node *nodes, int timeout_ms)
{
    uint64_t deadline =
        client_now_ms() +
        (uint64_t)(timeout_ms > 0 ? timeout_ms : c->conf.request_timeout_ms);
    size_t n_pending = 0;
    for (size_t i = 0; i < info->n_brokers; i++) {
        struct kappa_broker_info *b = &info->brokers[i];
        struct kconn *conn;
        struct kreq *req;
        nodes[i].b = b;
        nodes[i].n_pending = &n_pending;
        nodes[i].meta_term = -1;
        conn = metadata_broker_conn(c, b->id, b->host, b->port);
        if (conn == NULL || (req = kreq_new(c, WIRE_API_CLUSTER_STATUS,
                                            on_status, &nodes[i])) == NULL) {
            snprintf(b->error, sizeof b->error, "out of memory");
            continue;
        }
        req->deadline_ms = deadline;
        put_map0(&req->w, NULL);
        wire_frame_end(&req->head, 0);
        if (conn_send(conn, req) != 0) {
            snprintf(b->error, sizeof b->error, "out of memory");
            continue;
        }
        n_pending++;
    }
    /* Every request has a deadline: the wait ends. */
    return client_wait(c, none_pending, &n_pending, -1);
}

static struct st_node *node_of(struct kappa_cluster_info *info,
                               struct st_node *nodes, int32_t id)
{
    for (size_t i = 0; i < info->n_brokers; i++) {
        if (info->brokers[i].id == id) {
            return &nodes[i];
        }
    }
    return NULL;
}

/* Node id's row for (topic, partition), or NULL. */
static const struct st_row *row_of(const struct st_node *n, const char *topic,
                                   int32_t partition)
{
    for (size_t i = 0; n != NULL && i < n->n_rows; i++) {
        if (n->rows[i].partition == partition &&
            strcmp(n->rows[i].topic, topic) == 0) {
            return &n->rows[i];
        }
    }
    return NULL;
}

/* Broker id as the metadata state of the first answer that lists it,
 * preferring the metadata leader's. */
static const struct st_broker *meta_broker(struct kappa_cluster_info *info,
                                           struct st_node *nodes, int32_t id)
{
    struct st_node *leader = node_of(info, nodes, info->controller);
    for (size_t k = 0; k <= info->n_brokers; k++) {
        struct st_node *n = k == 0 ? leader : &nodes[k - 1];
        for (size_t i = 0; n != NULL && i < n->n_brokers; i++) {
            if (n->brokers[i].id == id) {
                return &n->brokers[i];
            }
        }
    }
    return NULL;
}

static void merge(struct kappa_cluster_info *info, struct st_node *nodes)
{
    struct st_node *leader = node_of(info, nodes, info->controller);
    if (leader != NULL && leader->has_status) {
        info->controller_term = leader->meta_term;
    }
    for (size_t i = 0; i < info->n_brokers; i++) {
        struct kappa_broker_info *b = &info->brokers[i];
        const struct st_broker *mb = meta_broker(info, nodes, b->id);
        if (mb != NULL) {
            snprintf(b->cluster_addr, sizeof b->cluster_addr, "%s",
                     mb->cluster_addr);
            snprintf(b->state, sizeof b->state, "%s", mb->state);
        }
    }
    for (size_t t = 0; t < info->n_topics; t++) {
        struct kappa_topic_state *ts = &info->topics[t];
        for (size_t p = 0; p < ts->n_partitions; p++) {
            struct kappa_partition_state *ps = &ts->partitions[p];
            const struct st_row *lr =
                ps->leader > 0 ? row_of(node_of(info, nodes, ps->leader),
                                        ts->name, ps->partition)
                               : NULL;
            if (lr != NULL) {
                ps->high_watermark = lr->high_watermark;
                ps->commit_index = lr->commit_index;
                ps->last_index = lr->last_index;
            }
            for (size_t r = 0; r < ps->n_replicas; r++) {
                struct kappa_replica_info *ri = &ps->replicas[r];
                const struct st_row *own = row_of(node_of(info, nodes, ri->id),
                                                  ts->name, ps->partition);
                ri->high_watermark = own != NULL ? own->high_watermark : -1;
                for (size_t f = 0; lr != NULL && f < lr->n_followers; f++) {
                    if (lr->followers[f].id == ri->id) {
                        ri->match_index = lr->followers[f].match_index;
                        ri->lag = lr->followers[f].lag;
                    }
                }
            }
        }
    }
}

int kappa_cluster_status(struct kappa_client *c,
                         struct kappa_cluster_info **out, int timeout_ms)
{
    struct kappa_cluster_info *info;
    struct st_node *nodes;
    int rv;
    client_begin(c);
    if ((rv = describe(c, &info, timeout_ms)) != 0) {
        *out = NULL;
        return rv;
    }
    nodes =
        kappa_calloc(info->n_brokers > 0 ? info->n_brokers : 1, sizeof *nodes);
    if (nodes == NULL) {
        kappa_cluster_info_free(info);
        *out = NULL;
        return client_error(c, KAPPA_ENOMEM, "cluster status");
    }
    (void)ask_all(c, info, nodes, timeout_ms);
    merge(info, nodes);
    for (size_t i = 0; i < info->n_brokers; i++) {
        st_node_clear(&nodes[i]);
    }
    kappa_free(nodes);
    *out = info;
    return 0;
}
