/* Envelope checks, argument readers, and the small APIs: Hello, Metadata,
 * CreateTopic, DeleteTopic, ListTopics, ListOffsets (Produce and Fetch live
 * in produce.c and fetch.c). Field names and types follow docs/protocol.md;
 * unknown keys are skipped.
 *
 * Happy path (DeleteTopic): topics_delete finishes at once and the reply is
 * sent. Failure modes: a group commit in flight makes the delete wait; the
 * request is then tracked on the connection and answered from the delete
 * callback, or silently freed there if the client went away. */
#include "dispatch.h"

#include <inttypes.h>
#include <string.h>

#include "broker/cluster.h"
#include "broker/server.h"
#include "broker/status.h"
#include "broker/topics.h"
#include "broker/version.h"
#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"
#include "common/wire.h"

typedef void (*api_handler)(struct conn *c, uint32_t corr,
                            struct mp_reader *args);

static const api_handler handlers[WIRE_API_COUNT] = {
    api_hello,        api_metadata,     api_create_topic,
    api_delete_topic, api_list_topics,  api_produce,
    api_fetch,        api_list_offsets, api_cluster_status,
};

void dispatch_frame(struct conn *c, uint8_t *body, size_t n)
{
    struct wire_request_header h = {0, 0, 0};
    struct mp_reader args;
    struct mp_reader walk;

    /* The correlation id stays 0 unless the decoder got that far. */
    if (wire_request_decode(body, n, &h, &args) != 0) {
        conn_protocol_error(c, h.correlation_id, KAPPA_EPROTO,
                            "malformed request envelope", body, n);
        return;
    }
    /* One bounded walk over the args proves every length and the nesting
     * depth, so handlers only meet type errors (EINVAL), never truncation. */
    walk = args;
    if (mp_peek(&walk) != MP_MAP || mp_skip(&walk) != 0 || walk.p != walk.end) {
        conn_protocol_error(c, h.correlation_id, KAPPA_EPROTO,
                            "request args are not one msgpack map", body, n);
        return;
    }
    if (h.api_key >= WIRE_API_COUNT) {
        conn_reply_error(c, h.correlation_id, KAPPA_EUNKNOWN_API, NULL);
        return;
    }
    if (h.api_version > WIRE_API_VERSION_MAX) {
        conn_reply_error(c, h.correlation_id, KAPPA_EVERSION, NULL);
        return;
    }
    handlers[h.api_key](c, h.correlation_id, &args);
}

static int expected(const char *field, const char *what, char *errmsg)
{
    kappa_errmsg_printf(errmsg, "%s: expected %s", field, what);
    return KAPPA_EINVAL;
}

int args_nil(struct mp_reader *r)
{
    if (mp_peek(r) == MP_NIL) {
        (void)mp_read_nil(r);
        return 1;
    }
    return 0;
}

int args_key(struct mp_reader *r, const char **key, uint32_t *len, char *errmsg)
{
    if (mp_peek(r) != MP_STR) {
        return expected("args", "string keys", errmsg);
    }
    return mp_read_str(r, key, len) == 0 ? 0 : KAPPA_EINVAL;
}

int args_int(struct mp_reader *r, const char *field, int64_t lo, int64_t hi,
             int64_t *v, char *errmsg)
{
    enum mp_type t = mp_peek(r);
    struct mp_reader probe = *r;
    if ((t != MP_UINT && t != MP_INT) || mp_read_int(&probe, v) != 0 ||
        *v < lo || *v > hi) {
        kappa_errmsg_printf(
            errmsg, "%s: expected an integer in [%" PRId64 ", %" PRId64 "]",
            field, lo, hi);
        (void)mp_skip(r);
        return KAPPA_EINVAL;
    }
    *r = probe;
    return 0;
}

int args_str(struct mp_reader *r, const char *field, const char **s,
             uint32_t *len, char *errmsg)
{
    if (mp_peek(r) != MP_STR) {
        return expected(field, "a string", errmsg);
    }
    return mp_read_str(r, s, len) == 0 ? 0 : KAPPA_EINVAL;
}

int args_bin(struct mp_reader *r, const char *field, const uint8_t **p,
             uint32_t *len, char *errmsg)
{
    if (mp_peek(r) != MP_BIN) {
        return expected(field, "binary", errmsg);
    }
    return mp_read_bin(r, p, len) == 0 ? 0 : KAPPA_EINVAL;
}

int args_array(struct mp_reader *r, const char *field, uint32_t max,
               uint32_t *n, char *errmsg)
{
    if (mp_peek(r) != MP_ARRAY || mp_read_array(r, n) != 0) {
        return expected(field, "an array", errmsg);
    }
    if (*n > max) {
        kappa_errmsg_printf(errmsg, "%s: more than %u entries", field, max);
        return KAPPA_EINVAL;
    }
    return 0;
}

int args_map(struct mp_reader *r, const char *field, uint32_t *n, char *errmsg)
{
    if (mp_peek(r) != MP_MAP || mp_read_map(r, n) != 0) {
        return expected(field, "a map", errmsg);
    }
    return 0;
}

static struct server *server_of(struct conn *c)
{
    return c->server;
}

void api_hello(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    struct reply r;
    (void)args; /* "client" is informational */
    reply_begin(&r, c, corr);
    mp_put_map(&r.w, 3);
    mp_put_str(&r.w, "node_id");
    mp_put_int(&r.w, server_of(c)->cfg->node_id);
    mp_put_str(&r.w, "version");
    mp_put_str(&r.w, KAPPA_BROKER_VERSION);
    mp_put_str(&r.w, "apis");
    mp_put_array(&r.w, WIRE_API_COUNT);
    for (int i = 0; i < WIRE_API_COUNT; i++) {
        mp_put_map(&r.w, 3);
        mp_put_str(&r.w, "key");
        mp_put_int(&r.w, i);
        mp_put_str(&r.w, "min");
        mp_put_int(&r.w, WIRE_API_VERSION_MIN);
        mp_put_str(&r.w, "max");
        mp_put_int(&r.w, WIRE_API_VERSION_MAX);
    }
    reply_end(&r);
}

/* Reads an optional list of topic names under `field`; *n = UINT32_MAX
 * when absent or nil (meaning every topic). names is left at the array. */
static int read_name_list(struct mp_reader *args, const char *field,
                          struct mp_reader *names, uint32_t *n, char *errmsg)
{
    uint32_t n_keys;
    const char *key;
    uint32_t key_len;
    int rv;

    *n = UINT32_MAX;
    if ((rv = args_map(args, "args", &n_keys, errmsg)) != 0) {
        return rv;
    }
    for (uint32_t i = 0; i < n_keys; i++) {
        if ((rv = args_key(args, &key, &key_len, errmsg)) != 0) {
            return rv;
        }
        if (mp_key_is(key, key_len, field) && !args_nil(args)) {
            *names = *args;
            if ((rv = args_array(args, field, TOPICS_MAX, n, errmsg)) != 0) {
                return rv;
            }
            for (uint32_t j = 0; j < *n; j++) {
                const char *s;
                uint32_t len;
                if ((rv = args_str(args, field, &s, &len, errmsg)) != 0) {
                    return rv;
                }
            }
        } else if (!mp_key_is(key, key_len, field)) {
            (void)mp_skip(args);
        }
    }
    return 0;
}

static void count_live(struct topic *topic, void *arg)
{
    *(uint32_t *)arg += !topic->is_deleting;
}

static uint32_t live_topics(struct server *s)
{
    uint32_t n = 0;
    topics_foreach(&s->topics, count_live, &n);
    return n;
}

struct metadata_ctx {
    struct mp_writer *w;
    int64_t node_id;
};

static void put_topic_metadata(struct topic *topic, void *arg)
{
    struct metadata_ctx *m = arg;
    if (topic->is_deleting) {
        return;
    }
    mp_put_map(m->w, 3);
    mp_put_str(m->w, "name");
    mp_put_strn(m->w, topic->name, topic->name_len);
    mp_put_str(m->w, "error");
    mp_put_int(m->w, 0);
    mp_put_str(m->w, "partitions");
    mp_put_array(m->w, topic->n_partitions);
    for (uint32_t i = 0; i < topic->n_partitions; i++) {
        mp_put_map(m->w, 4);
        mp_put_str(m->w, "partition");
        mp_put_uint(m->w, i);
        mp_put_str(m->w, "leader");
        mp_put_int(m->w, m->node_id);
        mp_put_str(m->w, "replicas");
        mp_put_array(m->w, 1);
        mp_put_int(m->w, m->node_id);
        mp_put_str(m->w, "error");
        mp_put_int(m->w, 0);
    }
}

static void put_unknown_topic(struct mp_writer *w, const char *name,
                              uint32_t len)
{
    mp_put_map(w, 3);
    mp_put_str(w, "name");
    mp_put_strn(w, name, len);
    mp_put_str(w, "error");
    mp_put_int(w, KAPPA_EUNKNOWN_TOPIC);
    mp_put_str(w, "partitions");
    mp_put_array(w, 0);
}

/* Writes each named topic with put(), or put_unknown_topic. */
static void put_named_topics(struct server *s, struct mp_reader *names,
                             uint32_t n, void (*put)(struct topic *, void *),
                             void *ctx, struct mp_writer *w)
{
    uint32_t ignored;
    (void)mp_read_array(names, &ignored);
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        uint32_t len;
        struct topic *topic;
        (void)mp_read_str(names, &name, &len);
        topic = topics_find(&s->topics, name, len);
        if (topic != NULL) {
            put(topic, ctx);
        } else {
            put_unknown_topic(w, name, len);
        }
    }
}

void api_metadata(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = server_of(c);
    struct mp_reader names;
    struct reply r;
    struct metadata_ctx m;
    uint32_t n;
    int rv = read_name_list(args, "topics", &names, &n, errmsg);

    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    if (s->cluster != NULL) {
        cluster_put_metadata(s->cluster, &r.w, &names, n);
        reply_end(&r);
        return;
    }
    m.w = &r.w;
    m.node_id = s->cfg->node_id;
    mp_put_map(&r.w, 3);
    mp_put_str(&r.w, "brokers");
    mp_put_array(&r.w, 1);
    mp_put_map(&r.w, 3);
    mp_put_str(&r.w, "id");
    mp_put_int(&r.w, s->cfg->node_id);
    mp_put_str(&r.w, "host");
    mp_put_str(&r.w, s->bound_host);
    mp_put_str(&r.w, "port");
    mp_put_int(&r.w, s->bound_port);
    mp_put_str(&r.w, "controller");
    mp_put_int(&r.w, s->cfg->node_id);
    mp_put_str(&r.w, "topics");
    if (n == UINT32_MAX) {
        mp_put_array(&r.w, live_topics(s));
        topics_foreach(&s->topics, put_topic_metadata, &m);
    } else {
        put_named_topics(s, &names, n, put_topic_metadata, &m, &r.w);
    }
    reply_end(&r);
}

/* The topic-level keys CreateTopic may override, with their bits. */
static const struct {
    const char *key;
    unsigned bit;
} topic_config_keys[] = {
    {"segment.bytes", TOPIC_OVERRIDE_SEGMENT_BYTES},
    {"segment.ms", TOPIC_OVERRIDE_SEGMENT_MS},
    {"retention.bytes", TOPIC_OVERRIDE_RETENTION_BYTES},
    {"retention.ms", TOPIC_OVERRIDE_RETENTION_MS},
};
#define N_TOPIC_CONFIG_KEYS                                                    \
    (sizeof topic_config_keys / sizeof topic_config_keys[0])

/* Copies a msgpack string into a NUL-terminated buffer of cap bytes. */
static int copy_str(const char *s, uint32_t len, char *dst, size_t cap)
{
    if (len >= cap || memchr(s, '\0', len) != NULL) {
        return -1;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}

/* Parses "configs": {str: str} with the broker's own value rules. */
static int read_topic_configs(struct mp_reader *args,
                              const struct broker_config *base,
                              struct broker_config *out, unsigned *overrides,
                              char *errmsg)
{
    char key[64];
    char value[64];
    const char *k, *v;
    uint32_t n, k_len, v_len;
    int rv;

    *out = *base;
    if (args_nil(args)) {
        return 0;
    }
    if ((rv = args_map(args, "configs", &n, errmsg)) != 0) {
        return rv;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t j;
        if ((rv = args_str(args, "configs", &k, &k_len, errmsg)) != 0 ||
            (rv = args_str(args, "configs", &v, &v_len, errmsg)) != 0) {
            return rv;
        }
        if (copy_str(k, k_len, key, sizeof key) != 0 ||
            copy_str(v, v_len, value, sizeof value) != 0) {
            return expected("configs", "short string keys and values", errmsg);
        }
        for (j = 0; j < N_TOPIC_CONFIG_KEYS; j++) {
            if (strcmp(key, topic_config_keys[j].key) == 0) {
                break;
            }
        }
        if (j == N_TOPIC_CONFIG_KEYS) {
            kappa_errmsg_printf(errmsg, "configs: unknown key '%s'", key);
            return KAPPA_EINVAL;
        }
        if (config_set(out, key, value, errmsg) != 0) {
            kappa_errmsg_wrap(errmsg, "configs");
            return KAPPA_EINVAL;
        }
        *overrides |= topic_config_keys[j].bit;
    }
    return 0;
}

struct create_args {
    char name[TOPIC_NAME_BYTES_MAX + 2];
    int has_name;
    int64_t partitions;
    int64_t replication_factor;
    unsigned overrides;
    struct broker_config cfg; /* holds the overridden log config */
};

static int read_create_field(struct mp_reader *args, const char *key,
                             uint32_t key_len, const struct server *s,
                             struct create_args *a, char *errmsg)
{
    const char *str;
    uint32_t len;
    int rv;

    if (mp_key_is(key, key_len, "name")) {
        if ((rv = args_str(args, "name", &str, &len, errmsg)) != 0) {
            return rv;
        }
        if (copy_str(str, len, a->name, sizeof a->name) != 0) {
            kappa_errmsg_printf(errmsg, "name: longer than %d bytes",
                                TOPIC_NAME_BYTES_MAX);
            return KAPPA_ETOPIC_NAME;
        }
        a->has_name = 1;
        return 0;
    }
    if (mp_key_is(key, key_len, "partitions")) {
        return args_nil(args)
                   ? 0
                   : args_int(args, "partitions", 1, TOPIC_PARTITIONS_MAX,
                              &a->partitions, errmsg);
    }
    if (mp_key_is(key, key_len, "replication_factor")) {
        return args_nil(args)
                   ? 0
                   : args_int(args, "replication_factor", 1,
                              s->cluster != NULL ? META_REPLICAS_MAX : 1,
                              &a->replication_factor, errmsg);
    }
    if (mp_key_is(key, key_len, "configs")) {
        return read_topic_configs(args, s->cfg, &a->cfg, &a->overrides, errmsg);
    }
    (void)mp_skip(args);
    return 0;
}

static void cluster_create_topic(struct conn *c, uint32_t corr,
                                 const struct create_args *a);

/* Cluster mode: a metadata command answered once it is committed (or
 * failed). */
struct meta_req {
    struct req base;
    struct server *server;
};

static void meta_req_abandon_cb(struct req *r)
{
    (void)r; /* the command goes on; meta_req_done frees */
}

static void meta_req_done(void *arg, int status, int64_t value)
{
    struct meta_req *d = arg;
    struct server *s = d->server;
    struct conn *c = d->base.conn;
    struct reply r;

    (void)value;
    conn_req_done(&d->base);
    if (c != NULL) {
        if (status != 0) {
            conn_reply_error(c, d->base.correlation_id, status, NULL);
        } else {
            reply_begin(&r, c, d->base.correlation_id);
            mp_put_map(&r.w, 0);
            reply_end(&r);
        }
    }
    kappa_free(d);
    s->n_reqs--;
    server_poke(s);
}

/* Submits an encoded metadata command on behalf of a request. */
static void meta_submit(struct conn *c, uint32_t corr, struct buf *cmd)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    struct server *s = server_of(c);
    struct meta_req *d = kappa_calloc(1, sizeof *d);
    int rv;

    if (d == NULL) {
        conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
        return;
    }
    d->server = s;
    rv = cluster_meta_submit(s->cluster, cmd->data, cmd->len, meta_req_done, d,
                             errmsg);
    if (rv != 0) {
        kappa_free(d);
        conn_reply_error(c, corr, rv, errmsg[0] != '\0' ? errmsg : NULL);
        return;
    }
    conn_req_add(c, &d->base, corr, meta_req_abandon_cb);
    s->n_reqs++;
}

/* The topic's overrides as meta_fsm config strings. */
static uint32_t override_kvs(const struct create_args *a, char values[][32],
                             struct meta_config_kv *kv)
{
    const struct log_config *l = &a->cfg.log;
    uint32_t n = 0;
    for (size_t j = 0; j < N_TOPIC_CONFIG_KEYS; j++) {
        unsigned bit = topic_config_keys[j].bit;
        if (!(a->overrides & bit)) {
            continue;
        }
        snprintf(values[n], 32, "%" PRId64,
                 bit == TOPIC_OVERRIDE_SEGMENT_BYTES ? (int64_t)l->segment_bytes
                 : bit == TOPIC_OVERRIDE_SEGMENT_MS  ? l->segment_ms
                 : bit == TOPIC_OVERRIDE_RETENTION_BYTES ? l->retention_bytes
                                                         : l->retention_ms);
        kv[n].key = topic_config_keys[j].key;
        kv[n].value = values[n];
        n++;
    }
    return n;
}

static void cluster_create_topic(struct conn *c, uint32_t corr,
                                 const struct create_args *a)
{
    char values[N_TOPIC_CONFIG_KEYS][32];
    struct meta_config_kv kv[N_TOPIC_CONFIG_KEYS];
    uint32_t n_kv = override_kvs(a, values, kv);
    struct buf cmd = {0};

    if (meta_cmd_create_topic(&cmd, a->name, (uint32_t)a->partitions,
                              (uint32_t)a->replication_factor, kv, n_kv,
                              0) != 0) {
        conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
    } else {
        meta_submit(c, corr, &cmd);
    }
    buf_free(&cmd);
}

void api_create_topic(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = server_of(c);
    struct create_args *a;
    struct reply r;
    const char *key;
    uint32_t n, key_len;
    int rv;

    /* Heap: a broker_config is too big for comfort on the stack. */
    a = kappa_calloc(1, sizeof *a);
    if (a == NULL) {
        conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
        return;
    }
    a->partitions = s->cfg->num_partitions;
    a->replication_factor = 1;
    a->cfg = *s->cfg;
    rv = args_map(args, "args", &n, errmsg);
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(args, &key, &key_len, errmsg);
        if (rv == 0) {
            rv = read_create_field(args, key, key_len, s, a, errmsg);
        }
    }
    if (rv == 0 && !a->has_name) {
        rv = expected("name", "a string", errmsg);
    }
    if (rv == 0 && s->cluster != NULL) {
        cluster_create_topic(c, corr, a);
        kappa_free(a);
        return;
    }
    if (rv == 0) {
        rv = topics_create(&s->topics, a->name, (uint32_t)a->partitions,
                           (uint32_t)a->replication_factor, a->overrides,
                           &a->cfg.log, errmsg);
    }
    kappa_free(a);
    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    mp_put_map(&r.w, 0);
    reply_end(&r);
}

/* A DeleteTopic waiting for group commits to finish. */
struct delete_req {
    struct req base;
    struct server *server;
};

static void delete_abandon_cb(struct req *r)
{
    (void)r; /* the delete goes on; delete_done_cb frees */
}

static void delete_done_cb(void *data, int status)
{
    struct delete_req *d = data;
    struct server *s = d->server;
    struct conn *c = d->base.conn;
    struct reply r;

    conn_req_done(&d->base);
    if (c != NULL) {
        if (status != 0) {
            conn_reply_error(c, d->base.correlation_id, status, NULL);
        } else {
            reply_begin(&r, c, d->base.correlation_id);
            mp_put_map(&r.w, 0);
            reply_end(&r);
        }
    }
    kappa_free(d);
    s->n_reqs--;
    server_poke(s);
}

static int read_name_arg(struct mp_reader *args, char *name, size_t cap,
                         char *errmsg)
{
    const char *key, *str;
    uint32_t n, key_len, len;
    int found = 0;
    int rv = args_map(args, "args", &n, errmsg);
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(args, &key, &key_len, errmsg);
        if (rv == 0 && mp_key_is(key, key_len, "name")) {
            rv = args_str(args, "name", &str, &len, errmsg);
            if (rv == 0 && copy_str(str, len, name, cap) != 0) {
                rv = expected("name", "a topic name", errmsg);
            }
            found = 1;
        } else if (rv == 0) {
            (void)mp_skip(args);
        }
    }
    if (rv == 0 && !found) {
        rv = expected("name", "a string", errmsg);
    }
    return rv;
}

void api_delete_topic(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    char name[TOPIC_NAME_BYTES_MAX + 2];
    struct server *s = server_of(c);
    struct delete_req *d;
    struct topic *topic;
    struct reply r;
    int rv = read_name_arg(args, name, sizeof name, errmsg);

    if (rv == 0 && s->cluster != NULL) {
        struct buf cmd = {0};
        if (meta_cmd_delete_topic(&cmd, name) != 0) {
            conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
        } else {
            meta_submit(c, corr, &cmd);
        }
        buf_free(&cmd);
        return;
    }
    if (rv == 0) {
        topic = topics_find(&s->topics, name, strlen(name));
        if (topic == NULL) {
            conn_reply_error(c, corr, KAPPA_EUNKNOWN_TOPIC, NULL);
            return;
        }
        d = kappa_calloc(1, sizeof *d);
        if (d == NULL) {
            conn_reply_error(c, corr, KAPPA_ENOMEM, NULL);
            return;
        }
        d->server = s;
        rv = topics_delete(&s->topics, topic, delete_done_cb, d, errmsg);
        if (rv == TOPICS_PENDING) {
            conn_req_add(c, &d->base, corr, delete_abandon_cb);
            s->n_reqs++;
            return;
        }
        kappa_free(d);
    }
    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    mp_put_map(&r.w, 0);
    reply_end(&r);
}

static void put_topic_configs(struct mp_writer *w, const struct topic *topic)
{
    const struct log_config *l = &topic->log_cfg;
    char value[32];
    uint32_t n = 0;
    for (size_t j = 0; j < N_TOPIC_CONFIG_KEYS; j++) {
        n += (topic->overrides & topic_config_keys[j].bit) != 0;
    }
    mp_put_map(w, n);
    for (size_t j = 0; j < N_TOPIC_CONFIG_KEYS; j++) {
        unsigned bit = topic_config_keys[j].bit;
        if (!(topic->overrides & bit)) {
            continue;
        }
        snprintf(value, sizeof value, "%" PRId64,
                 bit == TOPIC_OVERRIDE_SEGMENT_BYTES ? (int64_t)l->segment_bytes
                 : bit == TOPIC_OVERRIDE_SEGMENT_MS  ? l->segment_ms
                 : bit == TOPIC_OVERRIDE_RETENTION_BYTES ? l->retention_bytes
                                                         : l->retention_ms);
        mp_put_str(w, topic_config_keys[j].key);
        mp_put_str(w, value);
    }
}

static void put_partition_info(struct mp_writer *w, const struct topic *topic,
                               int64_t node_id)
{
    mp_put_array(w, topic->n_partitions);
    for (uint32_t i = 0; i < topic->n_partitions; i++) {
        const struct partition *p = &topic->partitions[i];
        mp_put_map(w, 6);
        mp_put_str(w, "partition");
        mp_put_uint(w, i);
        mp_put_str(w, "leader");
        mp_put_int(w, node_id);
        mp_put_str(w, "log_start");
        mp_put_int(w, log_start_offset(p->log));
        mp_put_str(w, "high_watermark");
        mp_put_int(w, partition_high_watermark(p));
        mp_put_str(w, "size_bytes");
        mp_put_uint(w, log_size_bytes(p->log));
        mp_put_str(w, "segments");
        mp_put_uint(w, log_segment_count(p->log));
    }
}

static void put_topic_description(struct topic *topic, void *arg)
{
    struct metadata_ctx *m = arg;
    if (topic->is_deleting) {
        return;
    }
    mp_put_map(m->w, 5);
    mp_put_str(m->w, "name");
    mp_put_strn(m->w, topic->name, topic->name_len);
    mp_put_str(m->w, "partitions");
    mp_put_uint(m->w, topic->n_partitions);
    mp_put_str(m->w, "replication_factor");
    mp_put_uint(m->w, topic->replication_factor);
    mp_put_str(m->w, "configs");
    put_topic_configs(m->w, topic);
    mp_put_str(m->w, "partition_info");
    put_partition_info(m->w, topic, m->node_id);
}

/* ListTopics with names: an unknown name fails the whole request, so
 * `kappa topic describe NAME` gets EUNKNOWN_TOPIC. */
static int check_names_exist(struct server *s, struct mp_reader names,
                             uint32_t n, char *errmsg)
{
    uint32_t ignored;
    (void)mp_read_array(&names, &ignored);
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        uint32_t len;
        (void)mp_read_str(&names, &name, &len);
        if (topics_find(&s->topics, name, len) == NULL) {
            kappa_errmsg_printf(errmsg, "unknown topic '%.*s'",
                                (int)(len > 249 ? 249 : len), name);
            return KAPPA_EUNKNOWN_TOPIC;
        }
    }
    return 0;
}

void api_list_topics(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = server_of(c);
    struct mp_reader names;
    struct metadata_ctx m;
    struct reply r;
    uint32_t n;
    int rv = read_name_list(args, "names", &names, &n, errmsg);

    if (rv == 0 && s->cluster != NULL) {
        reply_begin(&r, c, corr);
        mp_put_map(&r.w, 1);
        mp_put_str(&r.w, "topics");
        rv = cluster_put_topics(s->cluster, &r.w, &names, n, errmsg);
        if (rv == 0) {
            reply_end(&r);
            return;
        }
        reply_abort(&r);
    }
    if (rv == 0 && n != UINT32_MAX) {
        rv = check_names_exist(s, names, n, errmsg);
    }
    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    m.w = &r.w;
    m.node_id = s->cfg->node_id;
    mp_put_map(&r.w, 1);
    mp_put_str(&r.w, "topics");
    if (n == UINT32_MAX) {
        mp_put_array(&r.w, live_topics(s));
        topics_foreach(&s->topics, put_topic_description, &m);
    } else {
        put_named_topics(s, &names, n, put_topic_description, &m, &r.w);
    }
    reply_end(&r);
}

struct offsets_part {
    const char *topic;
    uint32_t topic_len;
    int64_t partition;
    int64_t timestamp;
};

static int read_offsets_part(struct mp_reader *args, struct offsets_part *op,
                             char *errmsg)
{
    const char *key;
    uint32_t n, key_len;
    int has_topic = 0, has_partition = 0, has_ts = 0;
    int rv = args_map(args, "parts", &n, errmsg);
    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(args, &key, &key_len, errmsg);
        if (rv != 0) {
            break;
        }
        if (mp_key_is(key, key_len, "topic")) {
            rv = args_str(args, "topic", &op->topic, &op->topic_len, errmsg);
            has_topic = 1;
        } else if (mp_key_is(key, key_len, "partition")) {
            rv = args_int(args, "partition", INT32_MIN, INT32_MAX,
                          &op->partition, errmsg);
            has_partition = 1;
        } else if (mp_key_is(key, key_len, "timestamp")) {
            rv = args_int(args, "timestamp", WIRE_OFFSET_EARLIEST, INT64_MAX,
                          &op->timestamp, errmsg);
            has_ts = 1;
        } else {
            (void)mp_skip(args);
        }
    }
    if (rv == 0 && !(has_topic && has_partition && has_ts)) {
        rv = expected("parts", "topic, partition and timestamp", errmsg);
    }
    return rv;
}

/* Resolves one ListOffsets part; returns the error code for the part. */
static int lookup_offset(struct server *s, const struct offsets_part *op,
                         int64_t *offset)
{
    int err = 0;
    struct partition *p = server_partition(s, op->topic, op->topic_len,
                                           op->partition, &err, NULL);
    int64_t hwm;
    if (p == NULL) {
        return err;
    }
    hwm = partition_high_watermark(p);
    if (op->timestamp == WIRE_OFFSET_LATEST) {
        *offset = hwm;
    } else if (op->timestamp == WIRE_OFFSET_EARLIEST) {
        *offset = log_start_offset(p->log);
    } else {
        err = log_offset_for_timestamp(p->log, op->timestamp, offset);
        /* Only durable records are visible: the log's answer may lie in the
         * unflushed tail. */
        if (err == 0 && *offset > hwm) {
            *offset = hwm;
        }
    }
    return err;
}

void api_list_offsets(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = server_of(c);
    struct mp_reader parts;
    struct offsets_part op;
    struct reply r;
    const char *key;
    uint32_t n, n_parts = 0, key_len;
    int has_parts = 0;
    int rv = args_map(args, "args", &n, errmsg);

    for (uint32_t i = 0; rv == 0 && i < n; i++) {
        rv = args_key(args, &key, &key_len, errmsg);
        if (rv == 0 && mp_key_is(key, key_len, "parts")) {
            rv =
                args_array(args, "parts", DISPATCH_PARTS_MAX, &n_parts, errmsg);
            parts = *args;
            has_parts = 1;
            for (uint32_t j = 0; rv == 0 && j < n_parts; j++) {
                rv = read_offsets_part(args, &op, errmsg);
            }
        } else if (rv == 0) {
            (void)mp_skip(args);
        }
    }
    if (rv == 0 && !has_parts) {
        rv = expected("parts", "an array", errmsg);
    }
    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    mp_put_map(&r.w, 1);
    mp_put_str(&r.w, "parts");
    mp_put_array(&r.w, n_parts);
    for (uint32_t j = 0; j < n_parts; j++) {
        int64_t offset = -1;
        int err;
        (void)read_offsets_part(&parts, &op, errmsg);
        err = lookup_offset(s, &op, &offset);
        mp_put_map(&r.w, 4);
        mp_put_str(&r.w, "topic");
        mp_put_strn(&r.w, op.topic, op.topic_len);
        mp_put_str(&r.w, "partition");
        mp_put_int(&r.w, op.partition);
        mp_put_str(&r.w, "error");
        mp_put_int(&r.w, err);
        mp_put_str(&r.w, "offset");
        mp_put_int(&r.w, err == 0 ? offset : -1);
    }
    reply_end(&r);
}
