/* The metadata group's Raft state machine: brokers, topics, partition
 * assignments with leader hints, and the producer-id counter, changed only
 * by msgpack commands applied in log order. Pure: no clock, no I/O. */
#ifndef KAPPA_CONSENSUS_META_FSM_H
#define KAPPA_CONSENSUS_META_FSM_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/topic_name.h"

/* Limits; every one is checked before anything is allocated. */
#define META_BROKERS_MAX            256
#define META_BROKER_ID_MAX          INT32_MAX
#define META_ADDR_BYTES_MAX         255
#define META_TOPICS_MAX             10000
#define META_TOPIC_NAME_BYTES_MAX   KAPPA_TOPIC_NAME_BYTES_MAX
#define META_TOPIC_PARTITIONS_MAX   10000
#define META_PARTITIONS_MAX         200000 /* over all topics */
#define META_REPLICAS_MAX           7
#define META_CONFIGS_MAX            64 /* per topic */
#define META_CONFIG_KEY_BYTES_MAX   128
#define META_CONFIG_VALUE_BYTES_MAX 1024
#define META_PRODUCER_IDS_BLOCK_MAX 1000000
#define META_SNAPSHOT_BYTES_MAX     (256u * 1024 * 1024)

enum meta_broker_state {
    META_BROKER_ALIVE = 1,
    META_BROKER_DECOMMISSIONING = 2, /* still hosts replicas */
    META_BROKER_REMOVED = 3,         /* decommissioned and empty */
};

/* Read-only views returned by the queries below. */
struct meta_broker {
    uint32_t id; /* 1 .. META_BROKER_ID_MAX */
    char client_addr[META_ADDR_BYTES_MAX + 1];
    char cluster_addr[META_ADDR_BYTES_MAX + 1];
    enum meta_broker_state state;
    int64_t last_heartbeat_ms; /* largest now_ms any command carried */
};

struct meta_config {
    char *key;
    char *value;
};

struct meta_partition {
    uint32_t n_replicas;
    uint32_t replicas[META_REPLICAS_MAX]; /* replicas[0]: preferred leader */
    uint32_t leader;                      /* leader hint, 0 when unknown */
    uint64_t leader_epoch; /* the partition group's term of that hint */
};

struct meta_topic {
    char name[META_TOPIC_NAME_BYTES_MAX + 1];
    uint32_t n_partitions;
    uint32_t replication_factor;
    uint64_t created_index; /* Raft index of the create_topic entry */
    uint32_t n_configs;
    struct meta_config *configs; /* sorted by key */
    struct meta_partition *partitions;
};

/* A topic config entry for the command encoders; value NULL means "delete"
 * in alter_topic_config. */
struct meta_config_kv {
    const char *key;
    const char *value;
};

enum meta_cmd_type {
    META_CMD_REGISTER_BROKER = 1,
    META_CMD_BROKER_HEARTBEAT = 2,
    META_CMD_DECOMMISSION_BROKER = 3,
    META_CMD_CREATE_TOPIC = 4,
    META_CMD_DELETE_TOPIC = 5,
    META_CMD_ALTER_TOPIC_CONFIG = 6,
    META_CMD_REASSIGN_PARTITION = 7,
    META_CMD_SET_LEADER_HINT = 8,
    META_CMD_ALLOCATE_PRODUCER_IDS = 9,
};

/* Command encoders: each appends one command to out and returns 0 or
 * KAPPA_ENOMEM. They do not validate (apply does), so tests can encode bad
 * commands. The format is at the top of meta_fsm.c. raft_apply needs the
 * bytes in a raft_malloc'd buffer: copy them there. */

/* Registers a broker, or updates its addresses. A removed broker that
 * registers again is alive again (its id is reused). */
int meta_cmd_register_broker(struct buf *out, uint32_t id,
                             const char *client_addr, const char *cluster_addr,
                             int64_t now_ms);
int meta_cmd_broker_heartbeat(struct buf *out, uint32_t id, int64_t now_ms);
/* Alive -> decommissioning, or straight to removed if it hosts nothing.
 * A decommissioning broker becomes removed when its last replica is
 * reassigned away or its last topic deleted. */
int meta_cmd_decommission_broker(struct buf *out, uint32_t id);
/* Placement is done inside apply from the brokers that are alive and whose
 * last heartbeat is >= min_heartbeat_ms (0: every alive broker). */
int meta_cmd_create_topic(struct buf *out, const char *name,
                          uint32_t n_partitions, uint32_t replication_factor,
                          const struct meta_config_kv *configs,
                          uint32_t n_configs, int64_t min_heartbeat_ms);
int meta_cmd_delete_topic(struct buf *out, const char *name);
int meta_cmd_alter_topic_config(struct buf *out, const char *name,
                                const struct meta_config_kv *changes,
                                uint32_t n_changes);
int meta_cmd_reassign_partition(struct buf *out, const char *name,
                                uint32_t partition, const uint32_t *replicas,
                                uint32_t n_replicas);
int meta_cmd_set_leader_hint(struct buf *out, const char *name,
                             uint32_t partition, uint32_t leader,
                             uint64_t leader_epoch);
int meta_cmd_allocate_producer_ids(struct buf *out, uint32_t n);

struct meta_fsm;

/* Returns an empty metadata FSM, or NULL when out of memory. */
struct meta_fsm *meta_fsm_new(void);

/* Frees it; NULL is a no-op. raft must be closed first. */
void meta_fsm_free(struct meta_fsm *m);

/* The struct raft_fsm (version 2) for raft_init or raft_fixture_grow; owned
 * by m, valid until meta_fsm_free. apply sets *result to a packed value
 * (not a pointer, nothing to free) that meta_fsm_result decodes. apply
 * returns RAFT_NOMEM only when out of memory (state unchanged, raft retries);
 * any bad command is a result code, never a crash. snapshot/restore carry
 * the full state (format in meta_fsm.c); restore takes ownership of the
 * buffer on success. */
struct raft_fsm *meta_fsm_raft(struct meta_fsm *m);

/* Lets apply read the entry's index (r->last_applied + 1 in raft 0.15) for
 * created_index. Call before raft_start on every replica; without it the
 * index recorded is 0. */
void meta_fsm_attach(struct meta_fsm *m, const struct raft *r);

/* Applies one command at the given Raft index, as raft's apply does.
 * Returns the result code (0 or KAPPA_E*) and sets *value (0 when the
 * command has no value):
 *   register_broker, heartbeat, decommission, delete_topic,
 *   alter_topic_config, reassign_partition   -> 0
 *   create_topic       -> created index
 *   set_leader_hint    -> 1 applied, 0 ignored as stale
 *   allocate_producer_ids -> first id of the block
 * Codes: KAPPA_EPROTO (undecodable), KAPPA_EINVAL, KAPPA_ETOPIC_NAME,
 * KAPPA_ETOPIC_EXISTS, KAPPA_EUNKNOWN_TOPIC, KAPPA_EBAD_PARTITION,
 * KAPPA_ENOENT (unknown broker), KAPPA_ETOOBIG (a limit),
 * KAPPA_EREPLICATION (rf above eligible brokers). KAPPA_ENOMEM means the
 * state is unchanged and the command must be applied again. */
int meta_fsm_apply_cmd(struct meta_fsm *m, uint64_t index, const void *cmd,
                       size_t len, int64_t *value);

/* Decodes an apply result: returns its code, and sets *value. */
int meta_fsm_result(const void *result, int64_t *value);

/* Queries. Returned pointers are owned by m and valid until the next apply,
 * restore or free. Brokers are sorted by id, topics by name. */
uint32_t meta_fsm_n_brokers(const struct meta_fsm *m);
const struct meta_broker *meta_fsm_broker_at(const struct meta_fsm *m,
                                             uint32_t i);
const struct meta_broker *meta_fsm_broker(const struct meta_fsm *m,
                                          uint32_t id);
uint32_t meta_fsm_n_topics(const struct meta_fsm *m);
const struct meta_topic *meta_fsm_topic_at(const struct meta_fsm *m,
                                           uint32_t i);
const struct meta_topic *meta_fsm_topic(const struct meta_fsm *m,
                                        const char *name, size_t len);
const struct meta_partition *meta_fsm_partition(const struct meta_fsm *m,
                                                const char *name, size_t len,
                                                uint32_t partition);
/* The value of a topic config, or NULL. */
const char *meta_topic_config(const struct meta_topic *t, const char *key);
int64_t meta_fsm_next_producer_id(const struct meta_fsm *m);
uint32_t meta_fsm_n_partitions(const struct meta_fsm *m);

/* Topic name rule, as broker/topics.c: [a-zA-Z0-9._-]{1,249}, not "." or
 * "..". */
int meta_topic_name_is_valid(const char *name, size_t len);

/* Full-state snapshot: appends it to out; equal states give identical
 * bytes. Returns 0 or KAPPA_ENOMEM. */
int meta_fsm_encode(const struct meta_fsm *m, struct buf *out);

/* Decodes a snapshot and, only if all of it is valid, replaces m's state.
 * Returns 0, KAPPA_EPROTO or KAPPA_ENOMEM (m unchanged). */
int meta_fsm_decode(struct meta_fsm *m, const void *data, size_t len);

#endif /* KAPPA_CONSENSUS_META_FSM_H */
