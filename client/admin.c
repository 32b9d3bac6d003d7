/* Admin calls (blocking): CreateTopic, DeleteTopic and ListTopics.
 *
 * Happy path: the request goes to any usable connection (the controller
 * role arrives with multi-broker clusters), the loop runs until the answer,
 * and ListTopics answers are copied into caller-owned kappa_topic_info.
 *
 * Failure modes: transport errors (a broker not up yet, a refused
 * connection) are retried with retry.backoff.ms until the call's timeout,
 * then reported with the connection's message; broker errors are returned
 * at once with the broker's message. */
#include <string.h>

#include "client_int.h"
#include "common/alloc.h"

#define CONFIG_KEY_MAX 128
#define CONFIGS_MAX    256

struct admin_wait {
    int is_done;
    int err;
    admin_parse_fn parse;
    void *out;
};

static void on_admin(struct kreq *req, int rv, struct kresp *resp)
{
    struct admin_wait *w = req->arg;
    w->is_done = 1;
    if (rv != 0) {
        kappa_errmsg_printf(req->c->detail, "%s", req->conn->errmsg);
        w->err = rv;
    } else if (resp->h.error_code != 0) {
        w->err = client_resp_error(req->c, resp);
    } else if (w->parse != NULL) {
        w->err = w->parse(&resp->result, w->out);
    }
}

static int admin_done(struct kappa_client *c, void *arg)
{
    (void)c;
    return ((struct admin_wait *)arg)->is_done;
}

/* Declared in client_int.h: one request, transport failures retried. */
int admin_call(struct kappa_client *c, int api, admin_encode_fn encode,
               const void *args, admin_parse_fn parse, void *out,
               int timeout_ms)
{
    uint64_t deadline =
        client_now_ms() +
        (uint64_t)(timeout_ms > 0 ? timeout_ms : c->conf.request_timeout_ms);
    char transport_detail[KAPPA_ERRMSG_SIZE] = "";
    for (;;) {
        struct admin_wait w = {0, 0, parse, out};
        struct kconn *conn = metadata_any_conn(c);
        struct kreq *req;
        uint64_t now;
        if (conn == NULL || (req = kreq_new(c, api, on_admin, &w)) == NULL) {
            return KAPPA_ENOMEM;
        }
        req->deadline_ms = deadline;
        encode(&req->w, args);
        wire_frame_end(&req->head, 0);
        if (conn_send(conn, req) != 0) {
            return KAPPA_ENOMEM;
        }
        (void)client_wait(c, admin_done, &w, -1);
        now = client_now_ms();
        if (w.err == KAPPA_ETIMEDOUT && transport_detail[0] != '\0') {
            /* Timed out while the broker kept refusing: say why. */
            memcpy(c->detail, transport_detail, sizeof c->detail);
            return KAPPA_ETRANSPORT;
        }
        if (w.err != KAPPA_ETRANSPORT || now + 1 >= deadline) {
            return w.err;
        }
        memcpy(transport_detail, c->detail, sizeof transport_detail);
        if (conn->broker_id < 0) {
            c->bootstrap_next++;
        }
        (void)client_wait(
            c, NULL, NULL,
            (int)(deadline - now < (uint64_t)c->conf.retry_backoff_ms
                      ? deadline - now
                      : (uint64_t)c->conf.retry_backoff_ms));
    }
}

/* ---- CreateTopic -------------------------------------------------------- */

struct create_args {
    const char *name;
    int32_t partitions;
    int32_t replication_factor;
    const char *const *configs;
    size_t n_configs;
};

static void encode_create(struct mp_writer *w, const void *arg)
{
    const struct create_args *a = arg;
    mp_put_map(w, a->n_configs > 0 ? 4 : 3);
    mp_put_str(w, "name");
    mp_put_str(w, a->name);
    mp_put_str(w, "partitions");
    mp_put_int(w, a->partitions);
    mp_put_str(w, "replication_factor");
    mp_put_int(w, a->replication_factor);
    if (a->n_configs == 0) {
        return;
    }
    mp_put_str(w, "configs");
    mp_put_map(w, (uint32_t)a->n_configs);
    for (size_t i = 0; i < a->n_configs; i++) {
        const char *eq = strchr(a->configs[i], '=');
        mp_put_strn(w, a->configs[i], (size_t)(eq - a->configs[i]));
        mp_put_str(w, eq + 1);
    }
}

int kappa_create_topic(struct kappa_client *c, const char *name,
                       int32_t partitions, int32_t replication_factor,
                       const char *const *configs, int timeout_ms)
{
    struct create_args a = {name, partitions,
                            replication_factor > 0 ? replication_factor : 1,
                            configs, 0};
    int rv;
    client_begin(c);
    if (name == NULL) {
        return client_error(c, KAPPA_EINVAL, "create topic: no name");
    }
    for (; configs != NULL && configs[a.n_configs] != NULL; a.n_configs++) {
        const char *eq = strchr(configs[a.n_configs], '=');
        if (eq == NULL || eq == configs[a.n_configs] ||
            eq - configs[a.n_configs] >= CONFIG_KEY_MAX ||
            a.n_configs == CONFIGS_MAX) {
            return client_error(c, KAPPA_EINVAL,
                                "create topic %.64s: config \"%.64s\" is not "
                                "key=value",
                                name, configs[a.n_configs]);
        }
    }
    rv = admin_call(c, WIRE_API_CREATE_TOPIC, encode_create, &a, NULL, NULL,
                    timeout_ms);
    if (rv != 0) {
        return client_error(c, rv, "create topic %.64s", name);
    }
    return 0;
}

/* ---- DeleteTopic -------------------------------------------------------- */

static void encode_delete(struct mp_writer *w, const void *arg)
{
    mp_put_map(w, 1);
    mp_put_str(w, "name");
    mp_put_str(w, arg);
}

int kappa_delete_topic(struct kappa_client *c, const char *name, int timeout_ms)
{
    int rv;
    client_begin(c);
    if (name == NULL) {
        return client_error(c, KAPPA_EINVAL, "delete topic: no name");
    }
    rv = admin_call(c, WIRE_API_DELETE_TOPIC, encode_delete, name, NULL, NULL,
                    timeout_ms);
    if (rv != 0) {
        return client_error(c, rv, "delete topic %.64s", name);
    }
    return 0;
}

/* ---- ListTopics --------------------------------------------------------- */

struct list_out {
    struct kappa_topic_info *topics;
    size_t n;
};

static void encode_list(struct mp_writer *w, const void *arg)
{
    if (arg == NULL) {
        mp_put_map(w, 0);
        return;
    }
    mp_put_map(w, 1);
    mp_put_str(w, "names");
    mp_put_array(w, 1);
    mp_put_str(w, arg);
}

static char *dup_str(struct mp_reader *r)
{
    const char *s;
    uint32_t len;
    char *copy;
    if (mp_read_str(r, &s, &len) != 0) {
        return NULL;
    }
    copy = kappa_malloc((size_t)len + 1);
    if (copy != NULL) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

static int read_configs(struct mp_reader *r, struct kappa_topic_info *t)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0 || n > CONFIGS_MAX) {
        return KAPPA_EPROTO;
    }
    t->config_keys = kappa_calloc(n + 1, sizeof(char *));
    t->config_values = kappa_calloc(n + 1, sizeof(char *));
    if (t->config_keys == NULL || t->config_values == NULL) {
        return KAPPA_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        t->config_keys[i] = dup_str(r);
        t->config_values[i] = t->config_keys[i] != NULL ? dup_str(r) : NULL;
        if (t->config_values[i] == NULL) {
            t->n_configs = i + (t->config_keys[i] != NULL);
            return KAPPA_EPROTO;
        }
        t->n_configs = i + 1;
    }
    return 0;
}

static int read_pinfo(struct mp_reader *r, struct kappa_partition_info *pi)
{
    uint32_t n;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int64_t v = 0;
        int rv = mp_read_str(r, &k, &kl);
        if (rv == 0 && mp_peek(r) != MP_UINT && mp_peek(r) != MP_INT) {
            if (mp_skip(r) != 0) {
                return KAPPA_EPROTO;
            }
            continue;
        }
        if (rv == 0) {
            rv = mp_read_int(r, &v);
        }
        if (rv != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "partition")) {
            pi->partition = (int32_t)v;
        } else if (mp_key_is(k, kl, "leader")) {
            pi->leader = (int32_t)v;
        } else if (mp_key_is(k, kl, "log_start")) {
            pi->log_start = v;
        } else if (mp_key_is(k, kl, "high_watermark")) {
            pi->high_watermark = v;
        } else if (mp_key_is(k, kl, "size_bytes")) {
            pi->size_bytes = (uint64_t)v;
        } else if (mp_key_is(k, kl, "segments")) {
            pi->segments = (uint32_t)v;
        }
    }
    return 0;
}

static int read_pinfos(struct mp_reader *r, struct kappa_topic_info *t,
                       uint32_t *count)
{
    uint32_t n;
    if (mp_read_array(r, &n) != 0 || n > KCLIENT_PARTITIONS_MAX) {
        return KAPPA_EPROTO;
    }
    t->partition_info = kappa_calloc(n == 0 ? 1 : n, sizeof *t->partition_info);
    if (t->partition_info == NULL) {
        return KAPPA_ENOMEM;
    }
    *count = n;
    for (uint32_t i = 0; i < n; i++) {
        if (read_pinfo(r, &t->partition_info[i]) != 0) {
            return KAPPA_EPROTO;
        }
    }
    return 0;
}

static int read_topic_info(struct mp_reader *r, struct kappa_topic_info *t)
{
    uint32_t n, n_info = 0;
    if (mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *k;
        uint32_t kl;
        int64_t v;
        int rv;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_key_is(k, kl, "name") && t->name == NULL) {
            t->name = dup_str(r);
            rv = t->name != NULL ? 0 : KAPPA_EPROTO;
        } else if (mp_key_is(k, kl, "partitions")) {
            rv = mp_read_int_range(r, 0, KCLIENT_PARTITIONS_MAX, &v);
            t->partitions = (int32_t)v;
        } else if (mp_key_is(k, kl, "replication_factor")) {
            rv = mp_read_int_range(r, 0, INT32_MAX, &v);
            t->replication_factor = (int32_t)v;
        } else if (mp_key_is(k, kl, "configs") && t->config_keys == NULL) {
            rv = read_configs(r, t);
        } else if (mp_key_is(k, kl, "partition_info") &&
                   t->partition_info == NULL) {
            rv = read_pinfos(r, t, &n_info);
        } else {
            rv = mp_skip(r);
        }
        if (rv != 0) {
            return rv;
        }
    }
    /* partition_info has exactly `partitions` entries for the caller. */
    t->partitions = (int32_t)n_info;
    if (t->name == NULL) {
        return KAPPA_EPROTO;
    }
    return 0;
}

static int parse_list(struct mp_reader *r, void *arg)
{
    struct list_out *out = arg;
    uint32_t n_map, n;
    if (mp_read_map(r, &n_map) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t i = 0; i < n_map; i++) {
        const char *k;
        uint32_t kl;
        if (mp_read_str(r, &k, &kl) != 0) {
            return KAPPA_EPROTO;
        }
        if (!mp_key_is(k, kl, "topics") || out->topics != NULL) {
            if (mp_skip(r) != 0) {
                return KAPPA_EPROTO;
            }
            continue;
        }
        if (mp_read_array(r, &n) != 0 || n > KCLIENT_TOPICS_MAX * 10) {
            return KAPPA_EPROTO;
        }
        out->topics = kappa_calloc(n == 0 ? 1 : n, sizeof *out->topics);
        if (out->topics == NULL) {
            return KAPPA_ENOMEM;
        }
        for (uint32_t j = 0; j < n; j++) {
            out->n = j + 1;
            int rv = read_topic_info(r, &out->topics[j]);
            if (rv != 0) {
                return rv;
            }
        }
    }
    return 0;
}

int kappa_list_topics(struct kappa_client *c, const char *name,
                      struct kappa_topic_info **topics, size_t *n,
                      int timeout_ms)
{
    struct list_out out = {NULL, 0};
    int rv;
    client_begin(c);
    *topics = NULL;
    *n = 0;
    rv = admin_call(c, WIRE_API_LIST_TOPICS, encode_list, name, parse_list,
                    &out, timeout_ms);
    if (rv == 0 && name != NULL && out.n == 0) {
        rv = KAPPA_EUNKNOWN_TOPIC;
    }
    if (rv != 0) {
        kappa_topic_info_free(out.topics, out.n);
        if (name != NULL) {
            return client_error(c, rv, "topic %.64s", name);
        }
        return client_error(c, rv, "list topics");
    }
    *topics = out.topics;
    *n = out.n;
    return 0;
}

void kappa_topic_info_free(struct kappa_topic_info *topics, size_t n)
{
    if (topics == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct kappa_topic_info *t = &topics[i];
        for (size_t j = 0; j < t->n_configs; j++) {
            kappa_free(t->config_keys[j]);
            kappa_free(t->config_values[j]);
        }
        kappa_free(t->config_keys);
        kappa_free(t->config_values);
        kappa_free(t->partition_info);
        kappa_free(t->name);
    }
    kappa_free(topics);
}
