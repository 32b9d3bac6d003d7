/* The topic registry of one node: topics live under DATA/topics/<name>/ with
 * a small metadata file and one log directory per partition. Create and
 * delete are durable before they return (or call back). Later the metadata
 * comes from a metadata Raft group; the registry keeps the same shape.
 * Loop thread only. */
#ifndef KAPPA_BROKER_TOPICS_H
#define KAPPA_BROKER_TOPICS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/config.h"
#include "broker/partition.h"
#include "common/topic_name.h"

#define TOPIC_NAME_BYTES_MAX KAPPA_TOPIC_NAME_BYTES_MAX
#define TOPIC_PARTITIONS_MAX 10000
#define TOPICS_MAX           10000

/* Bits of topic->overrides: which log settings the topic overrides. */
enum topic_override {
    TOPIC_OVERRIDE_SEGMENT_BYTES = 1u << 0,
    TOPIC_OVERRIDE_SEGMENT_MS = 1u << 1,
    TOPIC_OVERRIDE_RETENTION_BYTES = 1u << 2,
    TOPIC_OVERRIDE_RETENTION_MS = 1u << 3,
};

struct topic;
struct topics;

/* A topic delete finished (status 0) or failed. */
typedef void (*topics_delete_cb)(void *data, int status);

struct topic {
    struct topic *next_in_bucket;
    struct topics *topics;
    char name[TOPIC_NAME_BYTES_MAX + 1];
    size_t name_len;
    uint32_t n_partitions;
    uint32_t replication_factor;
    unsigned overrides;           /* enum topic_override bits */
    struct log_config log_cfg;    /* broker defaults plus overrides */
    struct partition *partitions; /* n_partitions, indexed by id */
    int is_deleting;
    topics_delete_cb delete_cb;
    void *delete_data;
};

/* Called when the last group commit of the registry finishes, so shutdown
 * can proceed. */
typedef void (*topics_idle_cb)(struct topics *t);

struct topics {
    uv_loop_t *loop;
    const struct broker_config *cfg;
    char topics_dir[CONFIG_PATH_BYTES_MAX + 16];
    char staging_dir[CONFIG_PATH_BYTES_MAX + 16];
    char trash_dir[CONFIG_PATH_BYTES_MAX + 16];
    struct topic **buckets;
    uint32_t n_buckets;
    uint32_t n_topics;
    uint64_t trash_seq;
    topics_idle_cb idle_cb;
    struct list dirty; /* partitions appended to in this loop pass */
    void *data;
};

/* Creates DATA/topics (and staging and trash directories), clears leftovers
 * of interrupted creates and deletes, and opens every topic found. A topic
 * whose metadata or log cannot be read is logged and skipped. Returns 0 or a
 * KAPPA_E* code with errmsg. */
int topics_open(struct topics *t, uv_loop_t *loop,
                const struct broker_config *cfg, char *errmsg);

/* Closes (fsyncs) every log and frees the registry. Precondition: no sync in
 * flight (topics_is_syncing() == 0). */
void topics_close(struct topics *t);

/* Returns 1 while any partition has a group commit in flight. */
int topics_is_syncing(struct topics *t);

/* Looks a topic up by name (deleting topics are not returned). */
struct topic *topics_find(struct topics *t, const char *name, size_t len);

/* Resolves (topic, partition) for a request part. Returns the partition or
 * NULL with *err set to KAPPA_EUNKNOWN_TOPIC or KAPPA_EBAD_PARTITION. */
struct partition *topics_partition(struct topics *t, const char *name,
                                   size_t len, int64_t partition, int *err);

/* Returns 1 when name is 1..249 bytes of [a-zA-Z0-9._-] and not "." or
 * "..". */
int topics_name_is_valid(const char *name, size_t len);

/* Creates a topic with n_partitions partitions and the given overrides of the
 * broker's log config (bits in overrides say which fields of log_cfg to
 * use). Returns 0, KAPPA_ETOPIC_EXISTS, KAPPA_ETOPIC_NAME, KAPPA_EBUSY
 * (being deleted), KAPPA_EINVAL, KAPPA_EIO or KAPPA_ENOMEM with errmsg. */
int topics_create(struct topics *t, const char *name, uint32_t n_partitions,
                  uint32_t replication_factor, unsigned overrides,
                  const struct log_config *log_cfg, char *errmsg);

/* Result of topics_delete when cb will run later. */
#define TOPICS_PENDING 1

/* Deletes a topic: stops new appends, waits for in-flight group commits,
 * closes the logs, renames the directory into the trash (the durable commit
 * point) and removes the files in the thread pool. Returns 0 when done now
 * (cb never runs), TOPICS_PENDING when cb(data, status) will run later, or a
 * KAPPA_E* code. */
int topics_delete(struct topics *t, struct topic *topic, topics_delete_cb cb,
                  void *data, char *errmsg);

/* Calls fn for every topic (deleting ones included), in no fixed order. */
void topics_foreach(struct topics *t, void (*fn)(struct topic *, void *),
                    void *arg);

/* Retention and age roll on every partition; logs deletions. */
void topics_housekeep(struct topics *t, int64_t now_ms);

#endif /* KAPPA_BROKER_TOPICS_H */
