/* Cluster mode.
 *
 * Happy path: cluster_start opens the group host (transport on
 * cluster.listen) and the metadata group in DATA/meta, bootstrapped with
 * cluster.voters when pristine. A 50 ms tick then (1) registers this broker
 * (client and cluster addresses) once a metadata leader is known, until the
 * state shows it; (2) reconciles the partition replicas with the metadata
 * state whenever its applied index moved: a replica assigned here is opened
 * in DATA/groups/<id>/ (bootstrapped with the assignment's replica set when
 * pristine, as every replica does), one no longer assigned (topic deleted)
 * is closed and its directory removed; (3) reports leadership of the groups
 * this node leads with set_leader_hint (one command in flight per replica,
 * only when the hint differs). Metadata commands are proposed locally when
 * this node is the ready metadata leader, else forwarded to the leader as
 * a transport application message:
 *
 *   request  msgpack array(3) [1, request id uint, command bin]
 *   response msgpack array(5) [2, request id uint, status int, value int,
 *                              leader id uint (0: unknown)]
 *
 * and answered once the command applied on the leader.
 *
 * Failure modes: a forward whose send fails or that gets no answer within
 * FORWARD_TIMEOUT_MS completes with ENOT_LEADER / ETIMEDOUT (the client
 * retries). A partition group that reports RAFT_IOERR is closed and
 * reopened from disk by the next reconcile. A metadata group I/O error
 * shuts the node down (a supervisor restarts it from disk). */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "broker/server.h"
#include "common/alloc.h"
#include "common/assert.h"
#include "common/err.h"
#include "common/log.h"

#define COMPONENT          "cluster"
#define TICK_MS            50
#define REGISTER_RETRY_MS  500
#define FORWARD_TIMEOUT_MS 10000
#define HINTS_PER_TICK     64
#define REPLICAS_MAX       META_PARTITIONS_MAX
#define FWD_REQUEST        1
#define FWD_RESPONSE       2
#define CLUSTER_PATH_BYTES (CONFIG_PATH_BYTES_MAX + 64)

struct replica {
    struct cluster *cl;
    struct group *group;
    struct partition part; /* the broker-facing view */
    char topic[META_TOPIC_NAME_BYTES_MAX + 1];
    uint32_t partition;
    uint64_t gid;
    bool is_seen;
    bool is_hint_in_flight;
    uint64_t hint_term_sent;
};

/* A command forwarded to the metadata leader. */
struct fwd_out {
    struct fwd_out *prev, *next;
    struct cluster *cl;
    struct transport_send ts;
    uint64_t id;
    uint64_t deadline_ms;
    cluster_meta_cb cb;
    void *arg;
    bool is_send_done;
    bool is_completed;
};

/* A command another node forwarded to us, and our answer. */
struct fwd_in {
    struct group_propose gp;
    struct transport_send ts;
    struct cluster *cl;
    uint64_t from;
    uint64_t id;
};

/* A command proposed locally. */
struct meta_op {
    struct group_propose gp;
    cluster_meta_cb cb;
    void *arg;
};

struct hint_op {
    struct cluster *cl;
    uint64_t gid;
};

struct cluster {
    struct server *server;
    uv_loop_t *loop;
    const struct broker_config *cfg;
    struct group_host host;
    bool is_host_init;
    bool is_host_closed;
    bool is_tick_closed;
    struct group *meta;
    uv_timer_t tick;
    struct replica **replicas;
    uint32_t n_replicas;
    uint32_t cap_replicas;
    struct fwd_out *fwd_head;
    uint64_t next_fwd_id;
    bool is_reconcile_wanted;
    bool is_register_in_flight;
    uint64_t register_next_ms;
    bool is_closing;
    void (*close_cb)(void *arg);
    void *close_arg;
    char client_addr[META_ADDR_BYTES_MAX + 1];
    char groups_dir[CLUSTER_PATH_BYTES];
};

static uint64_t self_id(const struct cluster *cl)
{
    return (uint64_t)cl->cfg->node_id;
}

static int64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const struct meta_fsm *cluster_meta(struct cluster *cl)
{
    return group_meta(cl->meta);
}

void cluster_foreach_replica(struct cluster *cl, cluster_replica_fn fn,
                             void *arg)
{
    for (uint32_t i = 0; i < cl->n_replicas; i++) {
        struct replica *r = cl->replicas[i];
        if (r->group != NULL) {
            fn(r->topic, r->partition, &r->part, r->group, arg);
        }
    }
}

bool cluster_is_ready(struct cluster *cl)
{
    const struct meta_broker *b;
    if (cl->is_closing || cl->meta == NULL || group_leader(cl->meta) == 0) {
        return false;
    }
    b = meta_fsm_broker(cluster_meta(cl), (uint32_t)self_id(cl));
    return b != NULL && b->state == META_BROKER_ALIVE &&
           strcmp(b->client_addr, cl->client_addr) == 0;
}

static uint64_t meta_leader(struct cluster *cl)
{
    return cl->meta != NULL ? group_leader(cl->meta) : 0;
}

/* ---- Replicas ----------------------------------------------------------- */

static struct replica *replica_find(struct cluster *cl, uint64_t gid)
{
    struct group *g = group_find(&cl->host, gid);
    return g != NULL && group_kind(g) == GROUP_PARTITION ? group_data(g) : NULL;
}

static uint64_t partition_gid(const struct meta_topic *t, uint32_t partition)
{
    return t->created_index * GROUP_PARTITION_STRIDE + partition;
}

static void replica_remove_at(struct cluster *cl, uint32_t i, bool destroy)
{
    struct replica *r = cl->replicas[i];
    cl->replicas[i] = cl->replicas[--cl->n_replicas];
    kappa_log(KAPPA_LOG_INFO, COMPONENT,
              "closing replica topic=%s partition=%u group=%" PRIu64
              " destroy=%d",
              r->topic, r->partition, r->gid, destroy);
    /* Out of the index first, so woken fetches no longer find it. */
    group_close(r->group, destroy);
    partition_detach(&r->part);
    kappa_free(r);
}

static int build_conf(struct cluster *cl, const struct meta_partition *mp,
                      struct raft_configuration *conf)
{
    const struct meta_fsm *m = cluster_meta(cl);
    raft_configuration_init(conf);
    for (uint32_t i = 0; i < mp->n_replicas; i++) {
        const struct meta_broker *b = meta_fsm_broker(m, mp->replicas[i]);
        if (b == NULL || b->cluster_addr[0] == '\0' ||
            raft_configuration_add(conf, b->id, b->cluster_addr, RAFT_VOTER) !=
                0) {
            raft_configuration_close(conf);
            return KAPPA_ENOENT;
        }
    }
    return 0;
}

static int replicas_grow(struct cluster *cl)
{
    struct replica **a;
    uint32_t cap;
    if (cl->n_replicas < cl->cap_replicas) {
        return 0;
    }
    if (cl->cap_replicas >= REPLICAS_MAX) {
        return KAPPA_ETOOBIG;
    }
    cap = cl->cap_replicas == 0 ? 16 : cl->cap_replicas * 2;
    a = kappa_realloc(cl->replicas, cap * sizeof *a);
    if (a == NULL) {
        return KAPPA_ENOMEM;
    }
    cl->replicas = a;
    cl->cap_replicas = cap;
    return 0;
}

/* Writes dir/partition.info, "<topic>\n<partition>\n", so that an offline
 * reader (kappad dump) can name the group without the metadata state.
 * Advisory and rewritten at every open, so it is not fsynced; a failure
 * is only logged. */
static void write_partition_info(const char *dir, const char *topic,
                                 uint32_t partition)
{
    char tmp[CLUSTER_PATH_BYTES + 64];
    char path[CLUSTER_PATH_BYTES + 64];
    FILE *f;
    int rv;
    snprintf(tmp, sizeof tmp, "%s/partition.info.tmp", dir);
    snprintf(path, sizeof path, "%s/partition.info", dir);
    f = fopen(tmp, "w");
    if (f == NULL) {
        return;
    }
    rv = fprintf(f, "%s\n%u\n", topic, partition) < 0;
    rv |= fclose(f) != 0;
    if (rv != 0 || rename(tmp, path) != 0) {
        kappa_log(KAPPA_LOG_WARN, COMPONENT, "write %s failed", path);
        (void)unlink(tmp);
    }
}

static void replica_open(struct cluster *cl, const struct meta_topic *t,
                         uint32_t partition)
{
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    char dir[CLUSTER_PATH_BYTES + 32];
    struct raft_configuration conf;
    struct group_options o;
    struct replica *r;
    uint64_t gid = partition_gid(t, partition);
    int rv;

    if (build_conf(cl, &t->partitions[partition], &conf) != 0) {
        cl->is_reconcile_wanted = true; /* a broker not registered yet */
        return;
    }
    r = kappa_calloc(1, sizeof *r);
    if (r == NULL || replicas_grow(cl) != 0) {
        kappa_free(r);
        raft_configuration_close(&conf);
        cl->is_reconcile_wanted = true;
        return;
    }
    r->cl = cl;
    r->gid = gid;
    r->partition = partition;
    snprintf(r->topic, sizeof r->topic, "%s", t->name);
    snprintf(dir, sizeof dir, "%s/%" PRIu64, cl->groups_dir, gid);
    o = (struct group_options){.id = gid,
                               .kind = GROUP_PARTITION,
                               .dir = dir,
                               .log_cfg = &cl->cfg->log,
                               .bootstrap = &conf,
                               .data = r};
    rv = group_open(&cl->host, &o, &r->group, errmsg);
    raft_configuration_close(&conf);
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "open replica %s/%u: %s", t->name,
                  partition, errmsg);
        kappa_free(r);
        return;
    }
    write_partition_info(dir, t->name, partition);
    partition_init_group(&r->part, cl->loop, partition, r->group, r);
    r->is_seen = true;
    cl->replicas[cl->n_replicas++] = r;
    kappa_log(KAPPA_LOG_INFO, COMPONENT,
              "opened replica topic=%s partition=%u group=%" PRIu64, t->name,
              partition, gid);
}

static bool is_assigned_here(const struct meta_partition *mp, uint64_t self)
{
    for (uint32_t i = 0; i < mp->n_replicas; i++) {
        if (mp->replicas[i] == self) {
            return true;
        }
    }
    return false;
}

/* Opens what the metadata state assigns here, closes what it no longer
 * does (deleted topics: their directories are removed). */
static void reconcile(struct cluster *cl)
{
    const struct meta_fsm *m = cluster_meta(cl);
    uint64_t self = self_id(cl);

    cl->is_reconcile_wanted = false;
    for (uint32_t i = 0; i < cl->n_replicas; i++) {
        cl->replicas[i]->is_seen = false;
    }
    for (uint32_t i = 0; i < meta_fsm_n_topics(m); i++) {
        const struct meta_topic *t = meta_fsm_topic_at(m, i);
        for (uint32_t p = 0; p < t->n_partitions; p++) {
            struct replica *r;
            if (!is_assigned_here(&t->partitions[p], self)) {
                continue;
            }
            r = replica_find(cl, partition_gid(t, p));
            if (r != NULL) {
                r->is_seen = true;
            } else {
                replica_open(cl, t, p);
            }
        }
    }
    for (uint32_t i = cl->n_replicas; i-- > 0;) {
        if (!cl->replicas[i]->is_seen) {
            replica_remove_at(cl, i, true);
        }
    }
}

/* ---- Group events ------------------------------------------------------- */

static void replica_failed(struct cluster *cl, struct replica *r)
{
    for (uint32_t i = 0; i < cl->n_replicas; i++) {
        if (cl->replicas[i] == r) {
            replica_remove_at(cl, i, false);
            break;
        }
    }
    cl->is_reconcile_wanted = true; /* reopens it from disk */
}

static void on_group_event(struct group *g, enum group_event ev, void *data)
{
    struct cluster *cl = data;
    struct replica *r;

    if (cl->is_closing) {
        return;
    }
    if (g == cl->meta) {
        if (ev == GROUP_EVENT_COMMIT) {
            cl->is_reconcile_wanted = true;
        } else if (ev == GROUP_EVENT_FAILED) {
            kappa_log(KAPPA_LOG_ERROR, COMPONENT,
                      "metadata group failed; shutting down");
            server_shutdown(cl->server);
        } else {
            kappa_log(KAPPA_LOG_INFO, COMPONENT,
                      "metadata leader=%" PRIu64 " ready=%d", group_leader(g),
                      group_is_ready(g));
        }
        return;
    }
    r = group_data(g);
    if (ev == GROUP_EVENT_FAILED) {
        replica_failed(cl, r);
        return;
    }
    partition_notify(&r->part);
}

/* ---- Forwarding --------------------------------------------------------- */

static void fwd_maybe_free(struct fwd_out *f)
{
    if (f->is_send_done && f->is_completed) {
        kappa_free(f);
    }
}

static void fwd_complete(struct fwd_out *f, int status, int64_t value)
{
    struct cluster *cl = f->cl;
    if (f->is_completed) {
        return;
    }
    f->is_completed = true;
    if (f->prev != NULL) {
        f->prev->next = f->next;
    } else {
        cl->fwd_head = f->next;
    }
    if (f->next != NULL) {
        f->next->prev = f->prev;
    }
    f->cb(f->arg, status, value);
    fwd_maybe_free(f);
}

static void fwd_sent_cb(struct transport_send *ts, int status)
{
    struct fwd_out *f = ts->data;
    f->is_send_done = true;
    if (status != 0) {
        fwd_complete(f, KAPPA_ENOT_LEADER, 0);
        return;
    }
    fwd_maybe_free(f);
}

/* The cluster address of node id (a voter or a registered broker). */
static const char *node_address(struct cluster *cl, uint64_t id)
{
    const struct meta_broker *b;
    for (uint32_t i = 0; i < cl->cfg->n_voters; i++) {
        if (cl->cfg->voters[i].id == id) {
            return cl->cfg->voters[i].addr;
        }
    }
    b = meta_fsm_broker(cluster_meta(cl), (uint32_t)id);
    return b != NULL && b->cluster_addr[0] != '\0' ? b->cluster_addr : NULL;
}

static int forward(struct cluster *cl, uint64_t leader, const void *cmd,
                   size_t len, cluster_meta_cb cb, void *arg)
{
    const char *addr = node_address(cl, leader);
    struct fwd_out *f;
    struct buf b = {0};
    struct mp_writer w;
    int rv;

    if (addr == NULL ||
        transport_set_peer(&cl->host.transport, leader, addr) != 0) {
        return KAPPA_ENOT_LEADER;
    }
    f = kappa_calloc(1, sizeof *f);
    if (f == NULL) {
        return KAPPA_ENOMEM;
    }
    mp_writer_init(&w, &b);
    mp_put_array(&w, 3);
    mp_put_uint(&w, FWD_REQUEST);
    mp_put_uint(&w, ++cl->next_fwd_id);
    mp_put_bin(&w, cmd, len);
    if (w.err != 0) {
        buf_free(&b);
        kappa_free(f);
        return KAPPA_ENOMEM;
    }
    f->cl = cl;
    f->id = cl->next_fwd_id;
    f->cb = cb;
    f->arg = arg;
    f->deadline_ms = uv_now(cl->loop) + FORWARD_TIMEOUT_MS;
    f->ts.data = f;
    rv = transport_send_app(&cl->host.transport, &f->ts, leader, b.data, b.len,
                            fwd_sent_cb);
    buf_free(&b);
    if (rv != 0) {
        kappa_free(f);
        return rv == KAPPA_ESHUTDOWN ? KAPPA_ESHUTDOWN : KAPPA_EINVAL;
    }
    f->next = cl->fwd_head;
    if (cl->fwd_head != NULL) {
        cl->fwd_head->prev = f;
    }
    cl->fwd_head = f;
    return 0;
}

static void fwd_in_sent_cb(struct transport_send *ts, int status)
{
    (void)status; /* the forwarder times out and retries */
    kappa_free(ts->data);
}

static void fwd_in_reply(struct fwd_in *fi, int status, int64_t value)
{
    struct cluster *cl = fi->cl;
    const char *addr = node_address(cl, fi->from);
    struct buf b = {0};
    struct mp_writer w;
    int rv = KAPPA_EINVAL;

    mp_writer_init(&w, &b);
    mp_put_array(&w, 5);
    mp_put_uint(&w, FWD_RESPONSE);
    mp_put_uint(&w, fi->id);
    mp_put_int(&w, status);
    mp_put_int(&w, value);
    mp_put_uint(&w, meta_leader(cl));
    fi->ts.data = fi;
    if (w.err == 0 && addr != NULL &&
        transport_set_peer(&cl->host.transport, fi->from, addr) == 0) {
        rv = transport_send_app(&cl->host.transport, &fi->ts, fi->from, b.data,
                                b.len, fwd_in_sent_cb);
    }
    buf_free(&b);
    if (rv != 0) {
        kappa_free(fi);
    }
}

static void fwd_in_done(struct group_propose *gp, int status, int64_t value)
{
    fwd_in_reply(gp->data, status, value);
}

static void on_fwd_request(struct cluster *cl, uint64_t from,
                           struct mp_reader *r)
{
    struct fwd_in *fi;
    const uint8_t *cmd;
    uint32_t len;
    uint64_t id;
    int rv;

    if (mp_read_uint(r, &id) != 0 || mp_read_bin(r, &cmd, &len) != 0) {
        return;
    }
    fi = kappa_calloc(1, sizeof *fi);
    if (fi == NULL) {
        return; /* the forwarder times out */
    }
    fi->cl = cl;
    fi->from = from;
    fi->id = id;
    fi->gp.data = fi;
    rv = group_propose_cmd(cl->meta, &fi->gp, cmd, len, fwd_in_done);
    if (rv != 0) {
        fwd_in_reply(fi, rv, 0);
    }
}

static void on_fwd_response(struct cluster *cl, struct mp_reader *r)
{
    uint64_t id, leader;
    int64_t status, value;
    if (mp_read_uint(r, &id) != 0 || mp_read_int(r, &status) != 0 ||
        mp_read_int(r, &value) != 0 || mp_read_uint(r, &leader) != 0) {
        return;
    }
    for (struct fwd_out *f = cl->fwd_head; f != NULL; f = f->next) {
        if (f->id == id) {
            fwd_complete(f, (int)status, value);
            return;
        }
    }
}

static void on_app(struct transport *t, uint64_t from, const uint8_t *payload,
                   size_t len, void *data)
{
    struct cluster *cl = data;
    struct mp_reader r;
    uint32_t n;
    uint64_t type;
    (void)t;

    if (cl->is_closing) {
        return;
    }
    mp_reader_init(&r, payload, len);
    if (mp_read_array(&r, &n) != 0 || mp_read_uint(&r, &type) != 0) {
        return;
    }
    if (type == FWD_REQUEST && n == 3) {
        on_fwd_request(cl, from, &r);
    } else if (type == FWD_RESPONSE && n == 5) {
        on_fwd_response(cl, &r);
    }
}

static void meta_op_done(struct group_propose *gp, int status, int64_t value)
{
    struct meta_op *op = gp->data;
    op->cb(op->arg, status, value);
    kappa_free(op);
}

int cluster_meta_submit(struct cluster *cl, const void *cmd, size_t len,
                        cluster_meta_cb cb, void *arg, char *msg)
{
    uint64_t leader = meta_leader(cl);
    struct meta_op *op;
    int rv;

    if (cl->is_closing) {
        return KAPPA_ESHUTDOWN;
    }
    if (group_is_ready(cl->meta)) {
        op = kappa_calloc(1, sizeof *op);
        if (op == NULL) {
            return KAPPA_ENOMEM;
        }
        op->cb = cb;
        op->arg = arg;
        op->gp.data = op;
        rv = group_propose_cmd(cl->meta, &op->gp, cmd, len, meta_op_done);
        if (rv != 0) {
            kappa_free(op);
        }
    } else if (leader != 0 && leader != self_id(cl)) {
        rv = forward(cl, leader, cmd, len, cb, arg);
    } else {
        rv = KAPPA_ENOT_LEADER;
    }
    if (rv == KAPPA_ENOT_LEADER && msg != NULL) {
        kappa_errmsg_printf(
            msg, "no metadata leader reachable (leader %" PRIu64 ")", leader);
    }
    return rv;
}

/* ---- Registration and leader hints -------------------------------------- */

static void register_done(void *arg, int status, int64_t value)
{
    struct cluster *cl = arg;
    (void)value;
    cl->is_register_in_flight = false;
    if (status != 0 && !cl->is_closing) {
        kappa_log(KAPPA_LOG_DEBUG, COMPONENT, "register: %s",
                  kappa_err_name(status));
    }
}

static void maybe_register(struct cluster *cl)
{
    const struct meta_broker *b =
        meta_fsm_broker(cluster_meta(cl), (uint32_t)self_id(cl));
    const char *cluster_addr = group_host_address(&cl->host);
    struct buf cmd = {0};
    uint64_t now = uv_now(cl->loop);

    if (b != NULL && b->state == META_BROKER_ALIVE &&
        strcmp(b->client_addr, cl->client_addr) == 0 &&
        strcmp(b->cluster_addr, cluster_addr) == 0) {
        return;
    }
    if (cl->is_register_in_flight || now < cl->register_next_ms ||
        meta_leader(cl) == 0) {
        return;
    }
    cl->register_next_ms = now + REGISTER_RETRY_MS;
    if (meta_cmd_register_broker(&cmd, (uint32_t)self_id(cl), cl->client_addr,
                                 cluster_addr, wall_now_ms()) == 0 &&
        cluster_meta_submit(cl, cmd.data, cmd.len, register_done, cl, NULL) ==
            0) {
        cl->is_register_in_flight = true;
    }
    buf_free(&cmd);
}

static void hint_done(void *arg, int status, int64_t value)
{
    struct hint_op *h = arg;
    struct replica *r = h->cl->is_closing ? NULL : replica_find(h->cl, h->gid);
    (void)value;
    if (r != NULL) {
        r->is_hint_in_flight = false;
        if (status != 0) {
            r->hint_term_sent = 0; /* try again */
        }
    }
    kappa_free(h);
}

static void report_hint(struct cluster *cl, struct replica *r, uint64_t term)
{
    struct buf cmd = {0};
    struct hint_op *h = kappa_malloc(sizeof *h);
    if (h == NULL) {
        return;
    }
    h->cl = cl;
    h->gid = r->gid;
    if (meta_cmd_set_leader_hint(&cmd, r->topic, r->partition,
                                 (uint32_t)self_id(cl), term) == 0 &&
        cluster_meta_submit(cl, cmd.data, cmd.len, hint_done, h, NULL) == 0) {
        r->is_hint_in_flight = true;
        r->hint_term_sent = term;
    } else {
        kappa_free(h);
    }
    buf_free(&cmd);
}

static void report_hints(struct cluster *cl)
{
    const struct meta_fsm *m = cluster_meta(cl);
    unsigned n = 0;
    for (uint32_t i = 0; i < cl->n_replicas && n < HINTS_PER_TICK; i++) {
        struct replica *r = cl->replicas[i];
        const struct meta_partition *mp;
        uint64_t term = group_term(r->group);
        if (!group_is_ready(r->group) || r->is_hint_in_flight ||
            r->hint_term_sent == term) {
            continue;
        }
        mp = meta_fsm_partition(m, r->topic, strlen(r->topic), r->partition);
        if (mp == NULL ||
            (mp->leader == self_id(cl) && mp->leader_epoch == term)) {
            r->hint_term_sent = term;
            continue;
        }
        report_hint(cl, r, term);
        n++;
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct cluster *cl = t->data;
    uint64_t now = uv_now(cl->loop);

    if (cl->is_closing) {
        return;
    }
    if (cl->is_reconcile_wanted) {
        reconcile(cl);
    }
    maybe_register(cl);
    report_hints(cl);
    for (struct fwd_out *f = cl->fwd_head; f != NULL;) {
        struct fwd_out *next = f->next;
        if (now >= f->deadline_ms) {
            fwd_complete(f, KAPPA_ETIMEDOUT, 0);
        }
        f = next;
    }
}

/* ---- Start and close ---------------------------------------------------- */

static int make_dir(const char *path, char *errmsg)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        kappa_errmsg_printf(errmsg, "mkdir %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    return 0;
}

static bool is_voter(const struct broker_config *cfg)
{
    for (uint32_t i = 0; i < cfg->n_voters; i++) {
        if (cfg->voters[i].id == (uint32_t)cfg->node_id) {
            return true;
        }
    }
    return false;
}

static int open_meta(struct cluster *cl, char *errmsg)
{
    const struct broker_config *cfg = cl->cfg;
    char dir[CLUSTER_PATH_BYTES];
    struct raft_configuration conf;
    struct group_options o;
    struct log_config lc;
    int rv = 0;

    raft_configuration_init(&conf);
    for (uint32_t i = 0; i < cfg->n_voters && rv == 0; i++) {
        rv = raft_configuration_add(&conf, cfg->voters[i].id,
                                    cfg->voters[i].addr, RAFT_VOTER);
        if (cfg->voters[i].id != (uint32_t)cfg->node_id) {
            (void)transport_set_peer(&cl->host.transport, cfg->voters[i].id,
                                     cfg->voters[i].addr);
        }
    }
    log_config_default(&lc);
    lc.segment_bytes = 64u * 1024 * 1024;
    snprintf(dir, sizeof dir, "%s/meta", cfg->data_dir);
    o = (struct group_options){.id = GROUP_META_ID,
                               .kind = GROUP_META,
                               .dir = dir,
                               .log_cfg = &lc,
                               .bootstrap = is_voter(cfg) ? &conf : NULL,
                               .data = cl};
    if (rv == 0) {
        rv = group_open(&cl->host, &o, &cl->meta, errmsg);
    } else {
        kappa_errmsg_printf(errmsg, "cluster.voters: bad configuration");
        rv = KAPPA_ECONFIG;
    }
    raft_configuration_close(&conf);
    return rv;
}

int cluster_start(struct cluster **out, struct server *s, uv_loop_t *loop,
                  const struct broker_config *cfg, const char *client_host,
                  int client_port, char *errmsg)
{
    struct cluster *cl = kappa_calloc(1, sizeof *cl);
    struct group_host_config hc = {
        .node_id = (uint64_t)cfg->node_id,
        .cluster_id = (uint64_t)cfg->cluster_id,
        .listen_addr = cfg->cluster_listen,
        .election_timeout_ms = (unsigned)cfg->raft_election_timeout_ms,
        .heartbeat_timeout_ms = (unsigned)cfg->raft_heartbeat_timeout_ms,
        .event_cb = on_group_event,
        .app_cb = on_app,
    };
    int rv;

    *out = cl;
    if (cl == NULL) {
        return KAPPA_ENOMEM;
    }
    cl->server = s;
    cl->loop = loop;
    cl->cfg = cfg;
    cl->is_host_closed = cl->is_tick_closed = true;
    snprintf(cl->client_addr, sizeof cl->client_addr, "%s:%d", client_host,
             client_port);
    snprintf(cl->groups_dir, sizeof cl->groups_dir, "%s/groups", cfg->data_dir);
    hc.data = cl;
    if (uv_timer_init(loop, &cl->tick) != 0) {
        return KAPPA_EIO;
    }
    cl->is_tick_closed = false;
    cl->tick.data = cl;
    rv = group_host_init(&cl->host, loop, &hc, errmsg);
    cl->is_host_init = true;
    cl->is_host_closed = false;
    if (rv == 0) {
        rv = make_dir(cl->groups_dir, errmsg);
    }
    if (rv == 0) {
        rv = open_meta(cl, errmsg);
    }
    if (rv == 0) {
        (void)uv_timer_start(&cl->tick, tick_cb, TICK_MS, TICK_MS);
        kappa_log(KAPPA_LOG_INFO, COMPONENT,
                  "cluster mode node=%" PRIu64 " cluster=%s client=%s "
                  "voters=%u",
                  self_id(cl), group_host_address(&cl->host), cl->client_addr,
                  cfg->n_voters);
    }
    return rv;
}

static void maybe_closed(struct cluster *cl)
{
    if (cl->is_host_closed && cl->is_tick_closed) {
        void (*cb)(void *) = cl->close_cb;
        void *arg = cl->close_arg;
        kappa_free(cl->replicas);
        kappa_free(cl);
        if (cb != NULL) {
            cb(arg);
        }
    }
}

static void host_closed(struct group_host *h)
{
    struct cluster *cl =
        (struct cluster *)(void *)((char *)h - offsetof(struct cluster, host));
    cl->is_host_closed = true;
    maybe_closed(cl);
}

static void tick_closed(uv_handle_t *h)
{
    struct cluster *cl = h->data;
    cl->is_tick_closed = true;
    maybe_closed(cl);
}

void cluster_close(struct cluster *cl, void (*cb)(void *arg), void *arg)
{
    if (cl->is_closing) {
        return;
    }
    cl->is_closing = true;
    cl->close_cb = cb;
    cl->close_arg = arg;
    while (cl->fwd_head != NULL) {
        fwd_complete(cl->fwd_head, KAPPA_ESHUTDOWN, 0);
    }
    while (cl->n_replicas > 0) {
        replica_remove_at(cl, cl->n_replicas - 1, false);
    }
    if (!cl->is_tick_closed) {
        uv_close((uv_handle_t *)&cl->tick, tick_closed);
    }
    if (cl->is_host_init) {
        group_host_close(&cl->host, host_closed);
    } else {
        maybe_closed(cl);
    }
}

/* ---- Lookups for the APIs ----------------------------------------------- */

struct partition *cluster_partition(struct cluster *cl, const char *name,
                                    size_t len, int64_t partition, int *err,
                                    char *msg)
{
    const struct meta_fsm *m = cluster_meta(cl);
    const struct meta_topic *t = meta_fsm_topic(m, name, len);
    struct replica *r;
    uint64_t leader;

    if (t == NULL) {
        *err = KAPPA_EUNKNOWN_TOPIC;
        return NULL;
    }
    if (partition < 0 || partition >= t->n_partitions) {
        *err = KAPPA_EBAD_PARTITION;
        return NULL;
    }
    r = replica_find(cl, partition_gid(t, (uint32_t)partition));
    if (r != NULL && group_is_ready(r->group)) {
        return &r->part;
    }
    leader = r != NULL ? group_leader(r->group) : 0;
    if ((leader == 0 || leader == self_id(cl)) &&
        t->partitions[partition].leader_epoch > 0) {
        leader = t->partitions[partition].leader;
    }
    *err = KAPPA_ENOT_LEADER;
    if (msg != NULL && leader != 0 && leader != self_id(cl)) {
        kappa_errmsg_printf(msg, "not leader; leader is node %" PRIu64, leader);
    } else if (msg != NULL) {
        kappa_errmsg_printf(msg, "not leader; leader unknown");
    }
    return NULL;
}

/* The leader to advertise: the local group's view, else the hint. */
static int64_t partition_leader(struct cluster *cl, const struct meta_topic *t,
                                uint32_t p)
{
    struct replica *r = replica_find(cl, partition_gid(t, p));
    uint64_t leader = r != NULL ? group_leader(r->group) : 0;
    /* A hint counts only once a group reported it (epoch > 0): the
     * placement's preferred leader may not have been elected yet. */
    if (r == NULL && t->partitions[p].leader_epoch > 0) {
        leader = t->partitions[p].leader;
    }
    return leader != 0 ? (int64_t)leader : -1;
}

static void put_topic(struct cluster *cl, struct mp_writer *w,
                      const struct meta_topic *t)
{
    mp_put_map(w, 3);
    mp_put_str(w, "name");
    mp_put_str(w, t->name);
    mp_put_str(w, "error");
    mp_put_int(w, 0);
    mp_put_str(w, "partitions");
    mp_put_array(w, t->n_partitions);
    for (uint32_t i = 0; i < t->n_partitions; i++) {
        const struct meta_partition *mp = &t->partitions[i];
        mp_put_map(w, 4);
        mp_put_str(w, "partition");
        mp_put_uint(w, i);
        mp_put_str(w, "leader");
        mp_put_int(w, partition_leader(cl, t, i));
        mp_put_str(w, "replicas");
        mp_put_array(w, mp->n_replicas);
        for (uint32_t j = 0; j < mp->n_replicas; j++) {
            mp_put_uint(w, mp->replicas[j]);
        }
        mp_put_str(w, "error");
        mp_put_int(w, 0);
    }
}

static void put_unknown(struct mp_writer *w, const char *name, uint32_t len)
{
    mp_put_map(w, 3);
    mp_put_str(w, "name");
    mp_put_strn(w, name, len);
    mp_put_str(w, "error");
    mp_put_int(w, KAPPA_EUNKNOWN_TOPIC);
    mp_put_str(w, "partitions");
    mp_put_array(w, 0);
}

static void put_brokers(struct mp_writer *w, const struct meta_fsm *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < meta_fsm_n_brokers(m); i++) {
        n += meta_fsm_broker_at(m, i)->state != META_BROKER_REMOVED;
    }
    mp_put_array(w, n);
    for (uint32_t i = 0; i < meta_fsm_n_brokers(m); i++) {
        const struct meta_broker *b = meta_fsm_broker_at(m, i);
        const char *colon = strrchr(b->client_addr, ':');
        if (b->state == META_BROKER_REMOVED) {
            continue;
        }
        mp_put_map(w, 3);
        mp_put_str(w, "id");
        mp_put_uint(w, b->id);
        mp_put_str(w, "host");
        mp_put_strn(w, b->client_addr,
                    colon != NULL ? (size_t)(colon - b->client_addr) : 0);
        mp_put_str(w, "port");
        mp_put_int(w, colon != NULL ? atoi(colon + 1) : 1);
    }
}

void cluster_put_metadata(struct cluster *cl, struct mp_writer *w,
                          struct mp_reader *names, uint32_t n)
{
    const struct meta_fsm *m = cluster_meta(cl);
    uint64_t leader = meta_leader(cl);
    uint32_t ignored;

    mp_put_map(w, 3);
    mp_put_str(w, "brokers");
    put_brokers(w, m);
    mp_put_str(w, "controller");
    mp_put_int(w, leader != 0 ? (int64_t)leader : -1);
    mp_put_str(w, "topics");
    if (n == UINT32_MAX) {
        mp_put_array(w, meta_fsm_n_topics(m));
        for (uint32_t i = 0; i < meta_fsm_n_topics(m); i++) {
            put_topic(cl, w, meta_fsm_topic_at(m, i));
        }
        return;
    }
    (void)mp_read_array(names, &ignored);
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        uint32_t len;
        const struct meta_topic *t;
        (void)mp_read_str(names, &name, &len);
        t = meta_fsm_topic(m, name, len);
        if (t != NULL) {
            put_topic(cl, w, t);
        } else {
            put_unknown(w, name, len);
        }
    }
}

static void put_description(struct cluster *cl, struct mp_writer *w,
                            const struct meta_topic *t)
{
    mp_put_map(w, 5);
    mp_put_str(w, "name");
    mp_put_str(w, t->name);
    mp_put_str(w, "partitions");
    mp_put_uint(w, t->n_partitions);
    mp_put_str(w, "replication_factor");
    mp_put_uint(w, t->replication_factor);
    mp_put_str(w, "configs");
    mp_put_map(w, t->n_configs);
    for (uint32_t i = 0; i < t->n_configs; i++) {
        mp_put_str(w, t->configs[i].key);
        mp_put_str(w, t->configs[i].value);
    }
    mp_put_str(w, "partition_info");
    mp_put_array(w, t->n_partitions);
    for (uint32_t i = 0; i < t->n_partitions; i++) {
        struct replica *r = replica_find(cl, partition_gid(t, i));
        struct log *l = r != NULL ? group_log(r->group) : NULL;
        mp_put_map(w, 6);
        mp_put_str(w, "partition");
        mp_put_uint(w, i);
        mp_put_str(w, "leader");
        mp_put_int(w, partition_leader(cl, t, i));
        mp_put_str(w, "log_start");
        mp_put_int(w, l != NULL ? log_start_offset(l) : -1);
        mp_put_str(w, "high_watermark");
        mp_put_int(w, r != NULL ? group_commit_offset(r->group) : -1);
        mp_put_str(w, "size_bytes");
        mp_put_uint(w, l != NULL ? log_size_bytes(l) : 0);
        mp_put_str(w, "segments");
        mp_put_uint(w, l != NULL ? log_segment_count(l) : 0);
    }
}

int cluster_put_topics(struct cluster *cl, struct mp_writer *w,
                       struct mp_reader *names, uint32_t n, char *errmsg)
{
    const struct meta_fsm *m = cluster_meta(cl);
    struct mp_reader probe;
    uint32_t ignored;

    if (n == UINT32_MAX) {
        mp_put_array(w, meta_fsm_n_topics(m));
        for (uint32_t i = 0; i < meta_fsm_n_topics(m); i++) {
            put_description(cl, w, meta_fsm_topic_at(m, i));
        }
        return 0;
    }
    probe = *names;
    (void)mp_read_array(&probe, &ignored);
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        uint32_t len;
        (void)mp_read_str(&probe, &name, &len);
        if (meta_fsm_topic(m, name, len) == NULL) {
            kappa_errmsg_printf(errmsg, "unknown topic '%.*s'",
                                (int)(len > 249 ? 249 : len), name);
            return KAPPA_EUNKNOWN_TOPIC;
        }
    }
    (void)mp_read_array(names, &ignored);
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        const char *name;
        uint32_t len;
        (void)mp_read_str(names, &name, &len);
        put_description(cl, w, meta_fsm_topic(m, name, len));
    }
    return 0;
}
