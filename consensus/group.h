/* Raft groups hosted by one node: a node-wide host (the node transport, the
 * rio group-commit syncer, and a uv_check handle that polls every group's
 * leadership and commit point once per loop turn, since raft 0.15 has no
 * state callback) and its groups. A partition replica is a segment store +
 * rio + partition_fsm + struct raft; the metadata group is a wrapped rio +
 * meta_fsm (docs/design.md, decisions 1-4).
 *
 * Loop thread only. A group accepts proposals and serves reads ("ready")
 * only while it leads and after the raft_barrier it issued on becoming
 * leader has been applied (raft 0.15 appends no no-op entry). */
#ifndef KAPPA_CONSENSUS_GROUP_H
#define KAPPA_CONSENSUS_GROUP_H

#include <raft.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/store/log.h"
#include "consensus/rio.h"
#include "consensus/transport.h"

/* The metadata group's id; group id 0 is the transport's application
 * channel (rmsg.h) and never a group. */
#define GROUP_META_ID 1
/* Partition group ids: created_index * GROUP_PARTITION_STRIDE + partition,
 * so they never collide with GROUP_META_ID (created_index >= 1). */
#define GROUP_PARTITION_STRIDE 16384u
/* Proposals (raft_apply calls) in flight per group. */
#define GROUP_INFLIGHT_MAX 256
/* Bytes of entries raft may hold in memory per group before a snapshot
 * (raft 0.15 keeps every entry since the last snapshot; research 5.1). */
#define GROUP_SNAPSHOT_BUDGET_BYTES (32u * 1024 * 1024)
#define GROUP_DIR_BYTES_MAX         1024

enum group_kind {
    GROUP_PARTITION = 1,
    GROUP_META = 2,
};

enum group_event {
    GROUP_EVENT_LEADER = 1, /* leader id, leadership or readiness changed */
    GROUP_EVENT_COMMIT = 2, /* commit offset (partition) or applied index
                               (metadata) advanced */
    GROUP_EVENT_FAILED = 3, /* a RAFT_IOERR: the owner must close the group
                               and open it again from disk */
};

struct group;
struct group_host;

typedef void (*group_host_event_cb)(struct group *g, enum group_event ev,
                                    void *data);
typedef void (*group_host_close_cb)(struct group_host *h);

struct group_host_config {
    uint64_t node_id;
    uint64_t cluster_id;
    const char *listen_addr; /* "a.b.c.d:port" of the transport */
    unsigned election_timeout_ms;
    unsigned heartbeat_timeout_ms;
    group_host_event_cb event_cb; /* every group event */
    transport_app_cb app_cb;      /* application messages */
    void *data;                   /* for both callbacks */
};

/* Caller-allocated; fields are private. */
struct group_host {
    uv_loop_t *loop;
    struct group_host_config cfg;
    struct transport transport;
    struct rio_syncer syncer;
    uv_check_t check;
    struct group *groups; /* every open group (closing ones excluded) */
    struct group **buckets;
    unsigned n_buckets;
    unsigned n_groups;
    unsigned n_closing; /* groups whose raft_close has not finished */
    bool is_closing;
    bool is_transport_closed;
    bool is_syncer_closed;
    bool is_check_closed;
    group_host_close_cb close_cb;
};

/* Starts the transport on cfg->listen_addr, the syncer and the check
 * handle. Returns 0 or a KAPPA_E* code with errmsg; on error the caller
 * must still call group_host_close (which then only closes what opened). */
int group_host_init(struct group_host *h, uv_loop_t *loop,
                    const struct group_host_config *cfg, char *errmsg);

/* Closes every group, then the transport, syncer and handle; cb runs once
 * everything is closed (h may then be freed). */
void group_host_close(struct group_host *h, group_host_close_cb cb);

/* The bound cluster address ("host:port"). */
const char *group_host_address(const struct group_host *h);

struct group_options {
    uint64_t id;
    enum group_kind kind;
    const char *dir;                  /* created if missing: rio files, and
                                         the store in dir/log */
    const struct log_config *log_cfg; /* the store's settings */
    /* Non-NULL: bootstrap with this configuration when the group is
     * pristine (every initial member does the same); a group with state
     * keeps it. */
    const struct raft_configuration *bootstrap;
    void *data; /* the owner's pointer, group_data() */
};

/* Opens a group from disk (raft_init + optional bootstrap + raft_start).
 * Returns 0 with *out, or KAPPA_EINVAL (duplicate id, host closing),
 * KAPPA_ENOMEM, KAPPA_EIO or KAPPA_ECORRUPT with errmsg. */
int group_open(struct group_host *h, const struct group_options *o,
               struct group **out, char *errmsg);

/* Starts closing: the group leaves the host's index at once (messages for
 * it are dropped), pending proposals complete with KAPPA_ENOT_LEADER, and
 * its memory is freed later. With destroy, its directory is removed. g must
 * not be used after this call. */
void group_close(struct group *g, bool destroy);

struct group *group_find(struct group_host *h, uint64_t id);
uint64_t group_id(const struct group *g);
void *group_data(const struct group *g);
enum group_kind group_kind(const struct group *g);
/* raft_leader's id (0: unknown) and this node's current term. */
uint64_t group_leader(const struct group *g);
uint64_t group_term(const struct group *g);
/* How many times the check handle saw a new known leader (metrics). */
uint64_t group_leader_changes(const struct group *g);
bool group_is_leader(const struct group *g);
/* Leader, and its own barrier is applied. */
bool group_is_ready(const struct group *g);
/* Partition groups: the store (reads only) and the commit offset, i.e. the
 * high watermark. */
struct log *group_log(const struct group *g);
int64_t group_commit_offset(const struct group *g);
/* Metadata group: the state machine (queries only). */
const struct meta_fsm *group_meta(const struct group *g);

/* Status snapshot for `kappa cluster status` (read-only). */
#define GROUP_STATUS_PEERS_MAX 16
struct group_peer_status {
    uint64_t id;
    uint64_t match_index; /* highest Raft index known to be replicated */
    bool is_voter;
    bool is_recent; /* heard from within the last election timeout */
};
struct group_status {
    int state;       /* RAFT_UNAVAILABLE, _FOLLOWER, _CANDIDATE, _LEADER */
    uint64_t term;   /* current term */
    uint64_t leader; /* 0: unknown */
    uint64_t commit_index;
    uint64_t last_applied;
    uint64_t last_index;
    bool is_ready;
    /* Leader only: every other server of the configuration (raft 0.15
     * leader_state.progress), at most GROUP_STATUS_PEERS_MAX. */
    unsigned n_peers;
    struct group_peer_status peers[GROUP_STATUS_PEERS_MAX];
};
void group_status_get(struct group *g, struct group_status *out);
/* The open group host whose check handle runs on loop (kappad has at most
 * one), or NULL: lets read-only status code reach the groups. */
struct group_host *group_host_of_loop(uv_loop_t *loop);

struct group_propose;

/* A proposal finished. status 0: value is the base offset (partition) or
 * the meta_fsm_result value (metadata); else a KAPPA_E* code: the FSM's
 * verdict, KAPPA_ENOT_LEADER (leadership lost or group closed: the outcome
 * is unknown, retriable) or KAPPA_EIO. */
typedef void (*group_propose_cb)(struct group_propose *req, int status,
                                 int64_t value);

struct group_propose {
    void *data; /* for the caller */
    /* Private. */
    struct raft_apply apply;
    struct group *g;
    struct group_propose *prev, *next; /* in g's pending list */
    group_propose_cb cb;
    int64_t producer_id;
    int16_t epoch;
    int32_t first_sequence;
    int32_t last_sequence;
    int64_t base_offset;
};

/* Proposes one record batch (len bytes, validated by the caller) on a
 * ready partition group: checks the producer state against the applied
 * state plus the batches proposed but not yet applied, numbers a copy of
 * the batch with rio_next_offset and the current term, and raft_applies
 * it. Returns 0 (cb runs later, exactly once), or, with no callback:
 * KAPPA_EDUPLICATE (*dup_offset holds the original base offset: answer
 * success with it), KAPPA_ENOT_LEADER, KAPPA_EBUSY (GROUP_INFLIGHT_MAX
 * proposals in flight, or a duplicate of one still in flight),
 * KAPPA_ESEQUENCE, KAPPA_EFENCED, KAPPA_EINVAL, KAPPA_ENOMEM. */
int group_propose_batch(struct group *g, struct group_propose *req,
                        const uint8_t *batch, size_t len, int64_t *dup_offset,
                        group_propose_cb cb);

/* Proposes one metadata command (meta_fsm.h encoders) on the ready
 * metadata group. Returns 0 (cb runs later) or KAPPA_ENOT_LEADER,
 * KAPPA_EBUSY, KAPPA_ENOMEM. */
int group_propose_cmd(struct group *g, struct group_propose *req,
                      const void *cmd, size_t len, group_propose_cb cb);

/* Asks raft to hand leadership to target (0: the most up-to-date voter).
 * Returns 0, KAPPA_EBUSY (a transfer is running) or KAPPA_ENOT_LEADER. */
int group_transfer(struct group *g, uint64_t target);

#endif /* KAPPA_CONSENSUS_GROUP_H */
