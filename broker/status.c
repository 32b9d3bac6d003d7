/* ClusterStatus: this node's local view, answered from memory at once.
 *
 * Cluster mode: the brokers of the metadata state, the metadata group's
 * Raft state on this node, and one row per partition replica hosted here
 * (topic and partition from the metadata state, group id = created index x
 * GROUP_PARTITION_STRIDE + partition): Raft role, term, leader, commit and
 * last index, the commit offset (high watermark), and, where this node
 * leads, each follower's match index and its lag in Raft entries behind
 * this node's last index. Single node: one broker and every local
 * partition as led here, with no Raft fields (-1).
 *
 * Nothing here changes state; a replica that is closing or not yet open is
 * simply not listed. */
#include "status.h"

#include <stdio.h>
#include <string.h>

#include "broker/cluster.h"
#include "broker/dispatch.h"
#include "broker/server.h"
#include "broker/topics.h"
#include "common/err.h"

static const char *state_name(int state)
{
    switch (state) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

static void put_raft(struct mp_writer *w, const struct group_status *st)
{
    mp_put_str(w, "state");
    mp_put_str(w, state_name(st->state));
    mp_put_str(w, "term");
    mp_put_uint(w, st->term);
    mp_put_str(w, "leader");
    mp_put_int(w, st->leader != 0 ? (int64_t)st->leader : -1);
    mp_put_str(w, "ready");
    mp_put_bool(w, st->is_ready);
    mp_put_str(w, "commit_index");
    mp_put_uint(w, st->commit_index);
    mp_put_str(w, "applied_index");
    mp_put_uint(w, st->last_applied);
    mp_put_str(w, "last_index");
    mp_put_uint(w, st->last_index);
    mp_put_str(w, "followers");
    mp_put_array(w, st->n_peers);
    for (unsigned i = 0; i < st->n_peers; i++) {
        const struct group_peer_status *p = &st->peers[i];
        mp_put_map(w, 5);
        mp_put_str(w, "id");
        mp_put_uint(w, p->id);
        mp_put_str(w, "match_index");
        mp_put_uint(w, p->match_index);
        mp_put_str(w, "lag");
        mp_put_uint(w, st->last_index > p->match_index
                           ? st->last_index - p->match_index
                           : 0);
        mp_put_str(w, "voter");
        mp_put_bool(w, p->is_voter);
        mp_put_str(w, "recent");
        mp_put_bool(w, p->is_recent);
    }
}
#define RAFT_KEYS 8

static void put_brokers(struct mp_writer *w, const struct meta_fsm *m)
{
    static const char *const states[] = {"?", "alive", "decommissioning",
                                         "removed"};
    uint32_t n = meta_fsm_n_brokers(m);
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct meta_broker *b = meta_fsm_broker_at(m, i);
        mp_put_map(w, 5);
        mp_put_str(w, "id");
        mp_put_uint(w, b->id);
        mp_put_str(w, "client_addr");
        mp_put_str(w, b->client_addr);
        mp_put_str(w, "cluster_addr");
        mp_put_str(w, b->cluster_addr);
        mp_put_str(w, "state");
        mp_put_str(w, (unsigned)b->state < 4 ? states[b->state] : "?");
        mp_put_str(w, "last_heartbeat_ms");
        mp_put_int(w, b->last_heartbeat_ms);
    }
}

static struct group *hosted(struct group_host *h, const struct meta_topic *t,
                            uint32_t p)
{
    struct group *g =
        group_find(h, t->created_index * GROUP_PARTITION_STRIDE + p);
    return g != NULL && group_kind(g) == GROUP_PARTITION ? g : NULL;
}

static void put_cluster_partitions(struct mp_writer *w, struct group_host *h,
                                   const struct meta_fsm *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; h != NULL && i < meta_fsm_n_topics(m); i++) {
        const struct meta_topic *t = meta_fsm_topic_at(m, i);
        for (uint32_t p = 0; p < t->n_partitions; p++) {
            n += hosted(h, t, p) != NULL;
        }
    }
    mp_put_array(w, n);
    for (uint32_t i = 0; h != NULL && i < meta_fsm_n_topics(m); i++) {
        const struct meta_topic *t = meta_fsm_topic_at(m, i);
        for (uint32_t p = 0; p < t->n_partitions; p++) {
            struct group *g = hosted(h, t, p);
            struct group_status st;
            struct log *l;
            if (g == NULL) {
                continue;
            }
            group_status_get(g, &st);
            l = group_log(g);
            mp_put_map(w, 6 + RAFT_KEYS);
            mp_put_str(w, "topic");
            mp_put_str(w, t->name);
            mp_put_str(w, "partition");
            mp_put_uint(w, p);
            mp_put_str(w, "group");
            mp_put_uint(w, group_id(g));
            mp_put_str(w, "high_watermark");
            mp_put_int(w, group_commit_offset(g));
            mp_put_str(w, "log_start");
            mp_put_int(w, l != NULL ? log_start_offset(l) : -1);
            mp_put_str(w, "log_end");
            mp_put_int(w, l != NULL ? log_end_offset(l) : -1);
            put_raft(w, &st);
        }
    }
}

static void reply_cluster(struct reply *r, struct server *s)
{
    struct mp_writer *w = &r->w;
    struct group_host *h = group_host_of_loop(s->loop);
    struct group *meta = h != NULL ? group_find(h, GROUP_META_ID) : NULL;
    const struct meta_fsm *m = cluster_meta(s->cluster);
    char addr[128];

    snprintf(addr, sizeof addr, "%s:%d", s->bound_host, s->bound_port);
    mp_put_map(w, 7);
    mp_put_str(w, "node_id");
    mp_put_int(w, s->cfg->node_id);
    mp_put_str(w, "mode");
    mp_put_str(w, "cluster");
    mp_put_str(w, "client_addr");
    mp_put_str(w, addr);
    mp_put_str(w, "cluster_addr");
    mp_put_str(w, h != NULL ? group_host_address(h) : "");
    mp_put_str(w, "meta");
    if (meta != NULL) {
        struct group_status st;
        group_status_get(meta, &st);
        mp_put_map(w, RAFT_KEYS);
        put_raft(w, &st);
    } else {
        mp_put_nil(w);
    }
    mp_put_str(w, "brokers");
    put_brokers(w, m);
    mp_put_str(w, "partitions");
    put_cluster_partitions(w, h, m);
}

struct single_ctx {
    struct mp_writer *w;
    struct server *s;
    uint32_t n;
};

static void count_partitions(struct topic *t, void *arg)
{
    struct single_ctx *x = arg;
    x->n += t->is_deleting ? 0 : t->n_partitions;
}

static void put_single_partitions(struct topic *t, void *arg)
{
    struct single_ctx *x = arg;
    struct mp_writer *w = x->w;
    if (t->is_deleting) {
        return;
    }
    for (uint32_t p = 0; p < t->n_partitions; p++) {
        struct partition *part = &t->partitions[p];
        mp_put_map(w, 7);
        mp_put_str(w, "topic");
        mp_put_strn(w, t->name, t->name_len);
        mp_put_str(w, "partition");
        mp_put_uint(w, p);
        mp_put_str(w, "state");
        mp_put_str(w, "leader");
        mp_put_str(w, "leader");
        mp_put_int(w, x->s->cfg->node_id);
        mp_put_str(w, "high_watermark");
        mp_put_int(w, partition_high_watermark(part));
        mp_put_str(w, "log_start");
        mp_put_int(w, log_start_offset(part->log));
        mp_put_str(w, "followers");
        mp_put_array(w, 0);
    }
}

static void reply_single(struct reply *r, struct server *s)
{
    struct mp_writer *w = &r->w;
    struct single_ctx x = {w, s, 0};
    char addr[128];

    snprintf(addr, sizeof addr, "%s:%d", s->bound_host, s->bound_port);
    mp_put_map(w, 7);
    mp_put_str(w, "node_id");
    mp_put_int(w, s->cfg->node_id);
    mp_put_str(w, "mode");
    mp_put_str(w, "single");
    mp_put_str(w, "client_addr");
    mp_put_str(w, addr);
    mp_put_str(w, "cluster_addr");
    mp_put_str(w, "");
    mp_put_str(w, "meta");
    mp_put_nil(w);
    mp_put_str(w, "brokers");
    mp_put_array(w, 1);
    mp_put_map(w, 5);
    mp_put_str(w, "id");
    mp_put_int(w, s->cfg->node_id);
    mp_put_str(w, "client_addr");
    mp_put_str(w, addr);
    mp_put_str(w, "cluster_addr");
    mp_put_str(w, "");
    mp_put_str(w, "state");
    mp_put_str(w, "alive");
    mp_put_str(w, "last_heartbeat_ms");
    mp_put_int(w, -1);
    mp_put_str(w, "partitions");
    topics_foreach(&s->topics, count_partitions, &x);
    mp_put_array(w, x.n);
    topics_foreach(&s->topics, put_single_partitions, &x);
}

void api_cluster_status(struct conn *c, uint32_t corr, struct mp_reader *args)
{
    char errmsg[KAPPA_ERRMSG_SIZE];
    struct server *s = c->server;
    struct reply r;
    uint32_t n;
    int rv = args_map(args, "args", &n, errmsg);

    if (rv != 0) {
        conn_reply_error(c, corr, rv, errmsg);
        return;
    }
    reply_begin(&r, c, corr);
    if (s->cluster != NULL) {
        reply_cluster(&r, s);
    } else {
        reply_single(&r, s);
    }
    reply_end(&r);
}
