/* The metadata cache: brokers, topics, partitions and their leaders, and the
 * connections used to reach them.
 *
 * Happy path: the first use of a topic adds an entry and sends a Metadata
 * request for every known topic to any usable connection (a broker already
 * connected, else the next bootstrap server); the answer fills in partitions
 * and leaders, and requests are then routed to the leader's connection,
 * opened on demand (one per broker id). A bootstrap connection is adopted
 * as a broker's connection when its Hello names the broker, or when the
 * broker's advertised address is the bootstrap address.
 *
 * Failure modes: a transport failure moves on to the next bootstrap server;
 * NOT_LEADER / transport errors elsewhere call metadata_refresh_soon(),
 * which is rate-limited and sent from the tick. Multi-broker clusters (next
 * milestone) only need leaders to move here: the routing already goes
 * through p->leader. */
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"
#include "common/assert.h"

#define TOPIC_NAME_MAX 249

struct ktopic *metadata_topic_find(struct kappa_client *c, const char *name)
{
    if (c->last_topic != NULL && strcmp(c->last_topic->name, name) == 0) {
        return c->last_topic;
    }
    for (struct ktopic *t = c->topics; t != NULL; t = t->next) {
        if (strcmp(t->name, name) == 0) {
            c->last_topic = t;
            return t;
        }
    }
    return NULL;
}

static struct ktopic *topic_add(struct kappa_client *c, const char *name)
{
    struct ktopic *t;
    if (c->n_topics == KCLIENT_TOPICS_MAX) {
        return NULL;
    }
    t = kappa_calloc(1, sizeof *t);
    if (t == NULL) {
        return NULL;
    }
    t->name = kappa_strdup(name);
    if (t->name == NULL) {
        kappa_free(t);
        return NULL;
    }
    t->sticky = -1;
    t->next = c->topics;
    c->topics = t;
    c->n_topics++;
    return t;
}

/* Grows t->parts to n partitions (existing kpart pointers stay valid, so
 * batches and fetches that point at them are unaffected). */
static int topic_grow(struct ktopic *t, int32_t n)
{
    struct kpart **parts;
    if (n <= t->n_parts) {
        return 0;
    }
    parts = kappa_realloc(t->parts, (size_t)n * sizeof *parts);
    if (parts == NULL) {
        return KAPPA_ENOMEM;
    }
    t->parts = parts;
    for (int32_t i = t->n_parts; i < n; i++) {
        struct kpart *p = kappa_calloc(1, sizeof *p);
        if (p == NULL) {
            return KAPPA_ENOMEM;
        }
        p->t = t;
        p->id = i;
        p->leader = -1;
        p->seek_ts_ms = -1;
        batch_reader_init(&p->reader);
        t->parts[i] = p;
        t->n_parts = i + 1;
    }
    return 0;
}

/* ---- Decoding the Metadata answer --------------------------------------- */

static int read_key(struct mp_reader *r, const char **key, uint32_t *len)
{
    return mp_read_str(r, key, len);
}

static int read_broker(struct mp_reader *r, struct kbroker *b)
{
    uint32_t n;
    int64_t v;
    memset(b, 0, sizeof *b);
    b->id = -1;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (read_key(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "id")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, &v);
            b->id = (int32_t)v;
        } else if (mp_key_is(k, kl, "host")) {
            rv = mp_read_cstr(r, b->host, sizeof b->host);
        } else if (mp_key_is(k, kl, "port")) {
            rv = mp_read_int_range(r, 1, 65535, &v);
            b->port = (int)v;
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

static int read_brokers(struct kappa_client *c, struct mp_reader *r)
{
    uint32_t n;
    struct kbroker *bs;
    if (mp_read_array(r, &n) != 0 || n > KCLIENT_CONNS_MAX) {
        return KAPPA_EPROTO;
    }
    bs = kappa_calloc(n == 0 ? 1 : n, sizeof *bs);
    if (bs == NULL) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (read_broker(r, &bs[i]) != 0) {
            kappa_free(bs);
            return KAPPA_EPROTO;
        }
    }
    kappa_free(c->brokers);
    c->brokers = bs;
    c->n_brokers = n;
    return 0;
}

static int read_partition(struct mp_reader *r, int64_t *id, int64_t *leader,
                          int64_t *err)
{
    uint32_t n;
    *id = -1;
    *leader = -1;
    *err = 0;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (read_key(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "partition")) {
            rv = mp_read_int_range(r, 0, KCLIENT_PARTITIONS_MAX - 1, id);
        } else if (mp_key_is(k, kl, "leader")) {
            rv = mp_read_int_range(r, -1, INT32_MAX, leader);
        } else if (mp_key_is(k, kl, "error")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, err);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
    }
    return *id >= 0 ? 0 : KAPPA_EPROTO;
}

/* Applies the partitions array to t (which may be NULL: not ours). */
static int read_partitions(struct mp_reader *r, struct ktopic *t)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0 || n > KCLIENT_PARTITIONS_MAX) {
        return KAPPA_EPROTO;
    }
    if (t != NULL && topic_grow(t, (int32_t)n) != 0) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t id, leader, err;
        if (read_partition(r, &id, &leader, &err) != 0) {
            return KAPPA_EPROTO;
        }
        if (t != NULL && id < t->n_parts) {
            t->parts[id]->leader = err == 0 ? (int32_t)leader : -1;
        }
    }
    if (t != NULL && n > 0) {
        t->is_known = 1;
    }
    return 0;
}

static int read_topic(struct kappa_client *c, struct mp_reader *r)
{
    uint32_t n;
    struct ktopic *t = NULL;
    int64_t err = 0;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (read_key(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "name")) {
            char name[TOPIC_NAME_MAX + 1];
            rv = mp_read_cstr(r, name, sizeof name);
            t = rv == 0 ? metadata_topic_find(c, name) : NULL;
        } else if (mp_key_is(k, kl, "error")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, &err);
        } else if (mp_key_is(k, kl, "partitions")) {
            /* The name comes first in the broker's encoding; when it does
             * not, the partitions are skipped and the next refresh fills
             * them in. */
            rv = read_partitions(r, t);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return rv;
        }
    }
    if (t != NULL) {
        t->err = (int)err;
        if (err != 0) {
            t->is_known = 0;
        }
    }
    return 0;
}

static int read_topics(struct kappa_client *c, struct mp_reader *r)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        int rv = read_topic(c, r);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int read_metadata(struct kappa_client *c, struct mp_reader *r)
{
    uint32_t n;
    int64_t v;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int rv;
        if (read_key(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "brokers")) {
            rv = read_brokers(c, r);
        } else if (mp_key_is(k, kl, "controller")) {
            rv = mp_read_int_range(r, -1, INT32_MAX, &v);
            c->controller = (int32_t)v;
        } else if (mp_key_is(k, kl, "topics")) {
            rv = read_topics(c, r);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static void on_metadata(struct kreq *req, int rv, struct kresp *resp)
{
    struct kappa_client *c = req->c;
    c->is_metadata_in_flight = 0;
    c->metadata_generation++;
    if (rv == 0 && resp->h.error_code != 0) {
        rv = client_resp_error(c, resp);
    } else if (rv == 0) {
        rv = read_metadata(c, &resp->result);
        if (rv != 0) {
            kappa_errmsg_printf(c->detail, "metadata: %s", kappa_err_str(rv));
        }
    } else {
        kappa_errmsg_printf(c->detail, "%s", req->conn->errmsg);
        if (req->conn->broker_id < 0) {
            c->bootstrap_next++;
        }
    }
    c->metadata_last_err = rv;
    if (rv != 0) {
        c->is_metadata_wanted = 1;
        return;
    }
    if (c->is_closing) {
        return;
    }
    producer_send(c);
    consumer_kick(c);
}

static int metadata_send(struct kappa_client *c)
{
    struct kconn *conn = metadata_any_conn(c);
    struct kreq *req;
    if (conn == NULL) {
        return KAPPA_ENOMEM;
    }
    req = kreq_new(c, WIRE_API_METADATA, on_metadata, NULL);
    if (req == NULL) {
        return KAPPA_ENOMEM;
    }
    mp_put_map(&req->w, 1);
    mp_put_str(&req->w, "topics");
    mp_put_array(&req->w, c->n_topics);
    for (struct ktopic *t = c->topics; t != NULL; t = t->next) {
        mp_put_str(&req->w, t->name);
    }
    wire_frame_end(&req->head, 0);
    if (conn_send(conn, req) != 0) {
        return KAPPA_ENOMEM;
    }
    c->is_metadata_in_flight = 1;
    c->is_metadata_wanted = 0;
    c->metadata_next_ms = client_now_ms() + KCLIENT_METADATA_MIN_INTERVAL_MS;
    return 0;
}

void metadata_refresh_soon(struct kappa_client *c)
{
    c->is_metadata_wanted = 1;
}

void metadata_tick(struct kappa_client *c, uint64_t now_ms)
{
    if (c->is_metadata_wanted && !c->is_metadata_in_flight &&
        now_ms >= c->metadata_next_ms) {
        (void)metadata_send(c);
    }
}

static int generation_changed(struct kappa_client *c, void *arg)
{
    return c->metadata_generation != *(uint64_t *)arg;
}

static int topic_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n >= 1 && n <= TOPIC_NAME_MAX;
}

int metadata_topic_get(struct kappa_client *c, const char *name,
                       struct ktopic **out)
{
    struct ktopic *t = metadata_topic_find(c, name);
    uint64_t deadline = client_now_ms() + (uint64_t)c->conf.request_timeout_ms;
    uint64_t unknown_since = 0;

    if (t != NULL && t->is_known) {
        *out = t;
        return 0;
    }
    if (!topic_name_ok(name)) {
        return client_error(c, KAPPA_ETOPIC_NAME, "topic %.64s", name);
    }
    if (t == NULL && (t = topic_add(c, name)) == NULL) {
        return client_error(c, KAPPA_ENOMEM, "topic %s", name);
    }
    for (;;) {
        uint64_t gen = c->metadata_generation;
        uint64_t now = client_now_ms();
        if (now >= deadline) {
            return client_error(c,
                                c->metadata_last_err != 0 ? c->metadata_last_err
                                                          : KAPPA_ETIMEDOUT,
                                "topic %s: metadata", name);
        }
        if (!c->is_metadata_in_flight && metadata_send(c) != 0) {
            return client_error(c, KAPPA_ENOMEM, "topic %s", name);
        }
        if (client_wait(c, generation_changed, &gen, (int)(deadline - now)) !=
            0) {
            continue;
        }
        if (t->is_known) {
            *out = t;
            return 0;
        }
        if (t->err != 0 && c->metadata_last_err == 0) {
            /* A topic just created reaches every broker a moment after the
             * metadata group commits it: "unknown" is final only once it
             * lasted topic.metadata.propagation.max.ms (librdkafka's
             * rule). */
            if (t->err != KAPPA_EUNKNOWN_TOPIC) {
                return client_error(c, t->err, "topic %s", name);
            }
            if (unknown_since == 0) {
                unknown_since = now;
            }
            if (now - unknown_since >= (uint64_t)c->conf.topic_propagation_ms) {
                return client_error(c, t->err, "topic %s", name);
            }
        }
        if (c->metadata_last_err != 0 &&
            !kappa_err_is_retriable(c->metadata_last_err)) {
            return client_error(c, c->metadata_last_err, "topic %s", name);
        }
        /* Transport trouble: back off, then ask the next server. */
        (void)client_wait(c, NULL, NULL, c->conf.retry_backoff_ms);
    }
}

static struct kconn *conn_by_id(struct kappa_client *c, int32_t id)
{
    for (unsigned i = 0; i < c->n_conns; i++) {
        if (c->conns[i]->broker_id == id) {
            return c->conns[i];
        }
    }
    return NULL;
}

static struct kconn *conn_by_addr(struct kappa_client *c, const char *host,
                                  int port)
{
    for (unsigned i = 0; i < c->n_conns; i++) {
        if (c->conns[i]->port == port && strcmp(c->conns[i]->host, host) == 0) {
            return c->conns[i];
        }
    }
    return NULL;
}

struct kconn *metadata_leader_conn(struct kappa_client *c, struct kpart *p)
{
    struct kconn *conn;
    if (p->leader < 0) {
        return NULL;
    }
    conn = conn_by_id(c, p->leader);
    if (conn != NULL) {
        return conn;
    }
    for (unsigned i = 0; i < c->n_brokers; i++) {
        struct kbroker *b = &c->brokers[i];
        if (b->id == p->leader) {
            return metadata_broker_conn(c, b->id, b->host, b->port);
        }
    }
    return NULL;
}

struct kconn *metadata_broker_conn(struct kappa_client *c, int32_t id,
                                   const char *host, int port)
{
    struct kconn *conn = conn_by_id(c, id);
    if (conn != NULL) {
        return conn;
    }
    conn = conn_by_addr(c, host, port);
    if (conn != NULL && conn->broker_id < 0) {
        conn->broker_id = id;
        return conn;
    }
    return conn_new(c, id, host, port);
}

struct kconn *metadata_any_conn(struct kappa_client *c)
{
    struct kbroker *b;
    struct kconn *conn;
    for (unsigned i = 0; i < c->n_conns; i++) {
        if (c->conns[i]->state == KCONN_READY) {
            return c->conns[i];
        }
    }
    KAPPA_ASSERT(c->n_bootstrap > 0);
    b = &c->bootstrap[c->bootstrap_next % c->n_bootstrap];
    conn = conn_by_addr(c, b->host, b->port);
    if (conn != NULL) {
        return conn;
    }
    return conn_new(c, -1, b->host, b->port);
}

void metadata_conn_identified(struct kappa_client *c, struct kconn *conn,
                              int32_t node_id)
{
    if (conn->broker_id < 0 && conn_by_id(c, node_id) == NULL) {
        conn->broker_id = node_id;
    }
}

void metadata_free(struct kappa_client *c)
{
    struct ktopic *t = c->topics;
    while (t != NULL) {
        struct ktopic *next = t->next;
        for (int32_t i = 0; i < t->n_parts; i++) {
            batch_reader_free(&t->parts[i]->reader);
            kappa_free(t->parts[i]);
        }
        kappa_free(t->parts);
        kappa_free(t->name);
        kappa_free(t);
        t = next;
    }
    c->topics = NULL;
    c->last_topic = NULL;
    kappa_free(c->brokers);
    c->brokers = NULL;
}
