/* libkappa: the Kappa client library (producer, consumer, admin).
 *
 * A client owns one libuv loop and its broker connections. It is not
 * thread-safe: call it from one thread at a time (one client per thread when
 * an application needs several). Network I/O happens inside kappa_poll,
 * kappa_flush, kappa_consume and the blocking calls, and opportunistically
 * inside kappa_produce when a batch fills up; an application that only
 * produces calls kappa_poll regularly (as with librdkafka) so linger.ms
 * expires and delivery callbacks run.
 *
 * Every call returns 0 or a positive code from <kappa/errors.h>;
 * kappa_last_error() gives a message with context for the last failure.
 *
 * libkappa exports only the functions declared KAPPA_API here and in
 * <kappa/errors.h>, all named kappa_*. */
#ifndef KAPPA_CLIENT_H
#define KAPPA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <kappa/errors.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Partition value asking the client to choose: by key hash (murmur2, as
 * Kafka's default partitioner) when a key is given, else sticky spreading
 * (a partition per batch, rotating). */
#define KAPPA_PARTITION_ANY (-1)
/* Special offsets for kappa_assign and kappa_seek. */
#define KAPPA_OFFSET_END       (-1)
#define KAPPA_OFFSET_BEGINNING (-2)

/* ---- Configuration: key=value properties, as in librdkafka ----------------
 *
 * bootstrap.servers        host:port[,host:port...] (required)
 * client.id                name sent in Hello (default "libkappa")
 * acks                     0 | 1 | all (default all)
 * linger.ms                time a batch waits to fill (default 5)
 * batch.size               bytes per batch before it is sent (default 1 MiB)
 * compression              none | lz4 | zstd (default none)
 * max.in.flight            produce requests in flight per broker (default 5)
 * queue.buffering.max.bytes  producer memory; over it kappa_produce returns
 *                          KAPPA_EBUSY (default 256 MiB)
 * request.timeout.ms       per request (default 30000)
 * message.timeout.ms       a record fails with ETIMEDOUT after this (30000)
 * retries                  retriable errors are retried this often (5)
 * topic.metadata.propagation.max.ms  how long a topic may be "unknown"
 *                          before produce/assign fail with
 *                          KAPPA_EUNKNOWN_TOPIC: a new topic reaches every
 *                          broker a moment after it is created (1000)
 * retry.backoff.ms         first backoff, doubled each retry (100)
 * fetch.max.wait.ms        long-poll wait of a fetch (default 500)
 * fetch.min.bytes          (default 1)
 * fetch.max.bytes          per fetch request (default 50 MiB)
 * fetch.partition.max.bytes  per partition (default 1 MiB)
 * check.crcs               true | false: verify batch CRCs (default true)
 */
struct kappa_conf;

KAPPA_API struct kappa_conf *kappa_conf_new(void);
KAPPA_API void kappa_conf_free(struct kappa_conf *conf);
/* Returns 0 or KAPPA_ECONFIG for an unknown key or a bad value, with a
 * message in errstr. */
KAPPA_API int kappa_conf_set(struct kappa_conf *conf, const char *key,
                             const char *value, char *errstr,
                             size_t errstr_size);

/* ---- Client ------------------------------------------------------------- */
struct kappa_client;

/* Takes ownership of conf (also on failure). Does not connect yet. Returns
 * 0, KAPPA_ECONFIG or KAPPA_ENOMEM with a message in errstr. */
KAPPA_API int kappa_client_new(struct kappa_conf *conf,
                               struct kappa_client **out, char *errstr,
                               size_t errstr_size);
/* Closes connections and frees the client. Records not yet delivered get
 * their delivery callback with KAPPA_ECANCELED first. NULL is a no-op. */
KAPPA_API void kappa_client_free(struct kappa_client *c);
/* Message of the last failed call, e.g. "produce t/3: unknown topic". */
KAPPA_API const char *kappa_last_error(const struct kappa_client *c);

/* ---- Producer ----------------------------------------------------------- */
struct kappa_header {
    const char *key;   /* NUL-terminated */
    const void *value; /* NULL for a null value */
    size_t value_len;
};

struct kappa_msg {
    const char *topic;
    int32_t partition; /* or KAPPA_PARTITION_ANY */
    const void *key;   /* NULL for a null key */
    size_t key_len;
    const void *value; /* NULL for a null value */
    size_t value_len;
    const struct kappa_header *headers;
    size_t n_headers;
    int64_t timestamp_ms; /* 0: now, from a clock reading shared by
                             records produced in a burst: at most about
                             1 ms old at a steady rate, and less than one
                             kernel tick (1-4 ms) otherwise */
    void *opaque;         /* handed back in the delivery report */
};

struct kappa_delivery {
    const char *topic;
    int32_t partition;
    int64_t offset; /* -1 on error, and for acks=0 */
    int err;        /* 0 or a KAPPA_E* code */
    void *opaque;
};

/* Runs once per record, in produce order per partition, from inside
 * kappa_poll / kappa_flush / blocking calls. Retriable errors are retried
 * (retries, retry.backoff.ms) before a report says so; until the idempotent
 * producer arrives, a retry after a lost response may store a batch twice,
 * and with max.in.flight > 1 a retried batch may land after a later one. */
typedef void (*kappa_delivery_cb)(const struct kappa_delivery *d, void *arg);
KAPPA_API void kappa_set_delivery_cb(struct kappa_client *c,
                                     kappa_delivery_cb cb, void *arg);

/* Copies the record into the partition's open batch (the caller's buffers
 * are free on return). The first record for a topic fetches its metadata,
 * blocking up to request.timeout.ms. Returns 0, KAPPA_EUNKNOWN_TOPIC,
 * KAPPA_EBAD_PARTITION, KAPPA_ETOOBIG (one record over the batch limit),
 * KAPPA_EBUSY (queue.buffering.max.bytes reached: call kappa_poll and
 * retry) or KAPPA_EINVAL. On error no delivery callback will run. */
KAPPA_API int kappa_produce(struct kappa_client *c, const struct kappa_msg *m);

/* Runs I/O and callbacks for up to timeout_ms (0: only what is ready).
 * Returns the number of delivery reports served. */
KAPPA_API int kappa_poll(struct kappa_client *c, int timeout_ms);

/* Sends every pending batch and waits until all records are delivered.
 * Returns 0 or KAPPA_ETIMEDOUT. */
KAPPA_API int kappa_flush(struct kappa_client *c, int timeout_ms);

/* Records produced but not yet delivered. */
KAPPA_API size_t kappa_outq_len(const struct kappa_client *c);

/* Blocking: produces one record and waits for its delivery; *offset gets its
 * offset. Returns the delivery's error. */
KAPPA_API int kappa_produce_sync(struct kappa_client *c,
                                 const struct kappa_msg *m, int64_t *offset,
                                 int timeout_ms);

/* ---- Consumer ----------------------------------------------------------- */

/* Starts fetching topic/partition from offset (>= 0, KAPPA_OFFSET_BEGINNING
 * or KAPPA_OFFSET_END). Assigning an assigned partition seeks it. Blocks to
 * fetch metadata the first time, and for BEGINNING/END to resolve the
 * offset (ListOffsets); the first fetch goes out in the next kappa_consume,
 * for all assigned partitions together. Returns 0, KAPPA_EUNKNOWN_TOPIC or
 * KAPPA_EBAD_PARTITION. */
KAPPA_API int kappa_assign(struct kappa_client *c, const char *topic,
                           int32_t partition, int64_t offset);
KAPPA_API int kappa_unassign(struct kappa_client *c, const char *topic,
                             int32_t partition);
/* Moves an assigned partition; records fetched before the seek are
 * dropped. */
KAPPA_API int kappa_seek(struct kappa_client *c, const char *topic,
                         int32_t partition, int64_t offset);
/* Seeks to the first offset whose timestamp is >= timestamp_ms (blocking
 * ListOffsets). */
KAPPA_API int kappa_seek_timestamp(struct kappa_client *c, const char *topic,
                                   int32_t partition, int64_t timestamp_ms);
/* Next offset kappa_consume will return for the partition. */
KAPPA_API int kappa_position(struct kappa_client *c, const char *topic,
                             int32_t partition, int64_t *offset);

struct kappa_record {
    const char *topic;
    int32_t partition;
    int err; /* non-zero: an error event for the partition, no record
                (e.g. KAPPA_EOFFSET_RANGE); the partition stops fetching */
    int64_t offset;
    int64_t timestamp_ms;
    const void *key; /* NULL for a null key */
    size_t key_len;
    const void *value; /* NULL for a null value */
    size_t value_len;
    size_t n_headers;
    int64_t high_watermark;   /* of the partition when fetched */
    const void *priv_headers; /* for kappa_record_header */
    size_t priv_headers_len;
};

/* Waits up to timeout_ms for records of assigned partitions and fills at
 * most max of them into out, in offset order per partition. The records
 * borrow the client's fetch buffers: valid until the next kappa_consume or
 * kappa_client_free. Returns 0 with *n set (0 on timeout) or an error. */
KAPPA_API int kappa_consume(struct kappa_client *c, int timeout_ms,
                            struct kappa_record *out, size_t max, size_t *n);

/* Header i (< n_headers) of a record; key is NOT NUL-terminated, its length
 * is returned in *key_len. Returns 0 or KAPPA_EINVAL. */
KAPPA_API int kappa_record_header(const struct kappa_record *r, size_t i,
                                  const char **key, size_t *key_len,
                                  const void **value, size_t *value_len);

/* Blocking ListOffsets: log start and high watermark of a partition. */
KAPPA_API int kappa_watermarks(struct kappa_client *c, const char *topic,
                               int32_t partition, int64_t *low, int64_t *high,
                               int timeout_ms);

/* Blocking ListOffsets by time: first offset with timestamp >= ts (the high
 * watermark if none). The broker answers at batch granularity: the result is
 * the first offset of the first batch whose largest timestamp is >= ts, so
 * earlier records of that batch may be older (kappa_seek_timestamp skips
 * them). */
KAPPA_API int kappa_offset_for_time(struct kappa_client *c, const char *topic,
                                    int32_t partition, int64_t timestamp_ms,
                                    int64_t *offset, int timeout_ms);

/* ---- Admin (blocking) --------------------------------------------------- */
struct kappa_partition_info {
    int32_t partition;
    int32_t leader;
    int64_t log_start;
    int64_t high_watermark;
    uint64_t size_bytes;
    uint32_t segments;
};

struct kappa_topic_info {
    char *name;
    int32_t partitions;
    int32_t replication_factor;
    size_t n_configs;
    char **config_keys;
    char **config_values;
    struct kappa_partition_info *partition_info; /* [partitions] */
};

/* configs: NULL or a NULL-terminated list of "key=value" strings. Returns 0
 * once the topic exists on the broker, KAPPA_ETOPIC_EXISTS,
 * KAPPA_ETOPIC_NAME or KAPPA_EINVAL. */
KAPPA_API int kappa_create_topic(struct kappa_client *c, const char *name,
                                 int32_t partitions, int32_t replication_factor,
                                 const char *const *configs, int timeout_ms);
KAPPA_API int kappa_delete_topic(struct kappa_client *c, const char *name,
                                 int timeout_ms);
/* Lists all topics (name filter NULL) or one; the caller frees *topics with
 * kappa_topic_info_free. */
KAPPA_API int kappa_list_topics(struct kappa_client *c, const char *name,
                                struct kappa_topic_info **topics, size_t *n,
                                int timeout_ms);
KAPPA_API void kappa_topic_info_free(struct kappa_topic_info *topics, size_t n);

/* ---- Cluster (blocking) -------------------------------------------------
 *
 * kappa_describe_cluster asks one broker for Metadata: the registered
 * brokers, the metadata leader and every topic's partitions with leader and
 * replicas. kappa_cluster_status does the same, then asks every broker
 * listed for ClusterStatus (its local Raft view) in parallel and merges the
 * answers into the fields marked "status"; kappa_describe_cluster leaves
 * those at "", 0 or -1. Both hand the caller one kappa_cluster_info, freed
 * with kappa_cluster_info_free (all arrays belong to it). */
#define KAPPA_CLUSTER_ADDR_MAX 272

struct kappa_broker_info {
    int32_t id;
    int port;
    char host[256];                            /* client address: host, port */
    char cluster_addr[KAPPA_CLUSTER_ADDR_MAX]; /* status: "" unknown */
    char state[24];         /* status, in the metadata state: "alive",
                               "decommissioning", "removed"; "" unknown */
    char metadata_role[24]; /* status: "leader", "follower", "candidate"...
                               in the metadata group; "" unknown */
    int is_alive;           /* status: it answered ClusterStatus */
    char error[256];        /* status: why it has no status ("" if it has) */
};

struct kappa_replica_info {
    int32_t id;
    /* status, -1 unknown: this replica's high watermark, and its match
     * index and lag (Raft entries behind) as its leader sees them */
    int64_t high_watermark;
    int64_t match_index;
    int64_t lag;
};

struct kappa_partition_state {
    int32_t partition;
    int32_t leader; /* broker id, -1 none */
    int err;        /* 0 or a KAPPA_E* code for this partition */
    size_t n_replicas;
    struct kappa_replica_info *replicas;
    /* status, -1 unknown: the leader's high watermark, Raft commit index
     * and last index */
    int64_t high_watermark;
    int64_t commit_index;
    int64_t last_index;
};

struct kappa_topic_state {
    char *name;
    int err; /* 0 or a KAPPA_E* code for this topic */
    size_t n_partitions;
    struct kappa_partition_state *partitions;
};

struct kappa_cluster_info {
    int32_t controller;      /* the metadata leader's id, -1 none */
    int64_t controller_term; /* status: its Raft term, -1 unknown */
    size_t n_brokers;
    struct kappa_broker_info *brokers; /* in the broker's Metadata order */
    size_t n_topics;
    struct kappa_topic_state *topics;
};

/* Metadata from any bootstrap server or known broker, retrying transport
 * failures until timeout_ms (0: request.timeout.ms). Returns 0 with *out
 * set, or an error with *out NULL. */
KAPPA_API int kappa_describe_cluster(struct kappa_client *c,
                                     struct kappa_cluster_info **out,
                                     int timeout_ms);
/* kappa_describe_cluster, then ClusterStatus on every broker, each waited
 * for up to timeout_ms. A broker that does not answer is not an error: it
 * is listed with is_alive 0 and error set. */
KAPPA_API int kappa_cluster_status(struct kappa_client *c,
                                   struct kappa_cluster_info **out,
                                   int timeout_ms);
/* NULL is a no-op. */
KAPPA_API void kappa_cluster_info_free(struct kappa_cluster_info *info);

#ifdef __cplusplus
}
#endif

#endif /* KAPPA_CLIENT_H */
