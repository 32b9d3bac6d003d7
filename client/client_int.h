/* libkappa internals shared by the client's modules: configuration, the
 * client object, broker connections and requests, the metadata cache and the
 * per-partition producer and consumer state. Loop thread only: a client is
 * used from one thread at a time and owns its libuv loop. */
#ifndef KAPPA_CLIENT_INT_H
#define KAPPA_CLIENT_INT_H

#include <kappa/client.h>
#include <stdint.h>
#include <uv.h>

#include "common/batch.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/mp.h"
#include "common/wire.h"

/* Limits: every list and map of the client is bounded. */
#define KCLIENT_CONNS_MAX      64
#define KCLIENT_TOPICS_MAX     10000
#define KCLIENT_PARTITIONS_MAX 10000
#define KCLIENT_BOOTSTRAP_MAX  16
#define KCLIENT_HOST_MAX       256
/* Finished batches are kept for reuse with their buffers (sized to
 * batch.size) and opaque arrays, so the steady state allocates nothing and
 * touches no fresh page. The pool holds at most KCLIENT_BATCH_POOL_MAX
 * batches and queue.buffering.max.bytes of memory; batches never taken out
 * during one KCLIENT_BATCH_POOL_TRIM_MS interval are freed at its end, so an
 * idle producer gives its memory back. */
#define KCLIENT_BATCH_POOL_MAX     512
#define KCLIENT_BATCH_POOL_TRIM_MS 1000
/* Record timestamps: one CLOCK_REALTIME reading serves at most this many
 * records, and about KCLIENT_CLOCK_REUSE_NS worth of them at the recent
 * record rate (client_record_ms). */
#define KCLIENT_CLOCK_REUSE_MAX 64
#define KCLIENT_CLOCK_REUSE_NS  1000000
/* Upper bound on the bytes of batches in one produce request. */
#define KCLIENT_PRODUCE_REQUEST_BYTES_MAX (16u * 1024 * 1024)
/* Period of the housekeeping timer (request and message timeouts, retry
 * backoff, reconnects, metadata refresh). */
#define KCLIENT_TICK_MS 50
/* Minimum time between two metadata refreshes triggered by errors. */
#define KCLIENT_METADATA_MIN_INTERVAL_MS 100
#define KCLIENT_RECONNECT_BACKOFF_MS     100
/* Fetches in flight per broker: one long poll, plus one for partitions that
 * became fetchable (drained, assigned, seeked) while it waits, so they do
 * not sit out the long poll. Partition sets of the two never overlap. */
#define KCLIENT_FETCHES_PER_BROKER_MAX 2

struct kappa_conf {
    char *bootstrap_servers;
    char client_id[64];
    int acks; /* 0, 1 or -1 */
    int linger_ms;
    size_t batch_bytes;
    int compression;
    int max_in_flight;
    size_t queue_max_bytes;
    int request_timeout_ms;
    int message_timeout_ms;
    int retries;
    int retry_backoff_ms;
    int topic_propagation_ms; /* topic.metadata.propagation.max.ms */
    int fetch_max_wait_ms;
    int fetch_min_bytes;
    int fetch_max_bytes;
    int fetch_partition_max_bytes;
    int check_crcs;
};

/* ---- Requests and connections (conn.c) ---------------------------------- */

struct kreq;
struct kconn;

/* The broker's answer to one request: the envelope and a reader positioned
 * at the result. frame is the connection's receive buffer; when
 * frame_is_whole the response occupies all of it and the handler may steal
 * the storage (buf_steal) to keep record bytes without copying. */
struct kresp {
    struct wire_response_header h;
    struct mp_reader result;
    struct buf *frame;
    int frame_is_whole;
};

/* Completion of a request: rv is 0 with resp set, or a transport-level
 * failure (KAPPA_ETRANSPORT, KAPPA_ETIMEDOUT, KAPPA_ECANCELED) with resp
 * NULL. A request that expects no response (acks=0 produce) completes with
 * rv 0 and resp NULL once written. Runs exactly once, never synchronously
 * inside conn_send. */
typedef void (*kreq_done_cb)(struct kreq *req, int rv, struct kresp *resp);

struct kreq {
    struct kreq *prev, *next; /* in the connection's pending or sent list */
    struct kappa_client *c;
    struct kconn *conn;
    int api;
    uint32_t correlation_id;
    uint64_t deadline_ms; /* monotonic */
    int expects_response;
    int is_writing;  /* uv_write outstanding: memory must stay */
    int is_finished; /* callback ran */
    uv_write_t write;
    struct buf head; /* frame header, envelope and args */
    struct mp_writer w;
    uv_buf_t *iov; /* NULL: the frame is head alone */
    unsigned n_iov;
    kreq_done_cb cb;
    void *arg;
};

enum kconn_state {
    KCONN_DISCONNECTED = 0,
    KCONN_CONNECTING,
    KCONN_READY,
    KCONN_CLOSING,
};

struct kconn {
    struct kappa_client *c;
    int32_t broker_id; /* -1 for a bootstrap server not yet identified */
    char host[KCLIENT_HOST_MAX];
    int port;
    enum kconn_state state;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct buf rbuf;
    /* Requests waiting for the connection, and requests written or being
     * written and waiting for their response. */
    struct kreq *pending_head, *pending_tail;
    struct kreq *sent_head, *sent_tail;
    unsigned n_produce_in_flight;
    unsigned send_pass; /* producer_send visits each connection once */
    unsigned n_fetch_in_flight;
    uint64_t next_connect_ms;
    char errmsg[KAPPA_ERRMSG_SIZE];
};

/* Allocates a request and writes the frame header and the envelope; the
 * caller writes one args value with req->w and then conn_send()s it.
 * Returns NULL on out of memory. */
struct kreq *kreq_new(struct kappa_client *c, int api, kreq_done_cb cb,
                      void *arg);
/* Frees a request that was never sent. */
void kreq_discard(struct kreq *req);

/* Queues req on conn, connecting first if needed. Takes ownership of req.
 * Returns 0 (the callback will run) or KAPPA_ENOMEM (it will not; req is
 * freed). */
int conn_send(struct kconn *conn, struct kreq *req);

struct kconn *conn_new(struct kappa_client *c, int32_t broker_id,
                       const char *host, int port);
/* Fails every request of conn with rv and closes the socket. */
void conn_fail(struct kconn *conn, int rv, const char *why);
/* Checks deadlines and starts reconnects; called from the tick timer. */
void conn_tick(struct kconn *conn, uint64_t now_ms);
/* Starts closing for client shutdown; conn is freed in its close callback
 * or at once when no handle is open. */
void conn_close(struct kconn *conn);

/* ---- Metadata (metadata.c) ---------------------------------------------- */

struct pbatch;
struct fchunk;

struct kpart {
    struct ktopic *t;
    struct kpart *done_next; /* in c->done_parts */
    int is_done_listed;
    int32_t id;
    int32_t leader; /* broker id, -1 unknown */

    /* Producer: the open batch, then sealed batches in produce order. */
    struct pbatch *open;
    struct pbatch *q_head, *q_tail;
    struct kpart *ready_next; /* in c->ready_parts */
    int is_ready_listed;

    /* Consumer. */
    int is_assigned;
    int is_stopped;  /* after an error event, until a seek */
    int err_pending; /* error event to hand out */
    int fetch_in_flight;
    uint32_t epoch;    /* bumped by seeks: older fetch responses are dropped */
    int64_t pos;       /* next offset kappa_consume returns */
    int64_t fetch_pos; /* next offset to fetch */
    int64_t high_watermark;
    /* After kappa_seek_timestamp: ListOffsets answers with the start of the
     * batch that reaches the time, so records before the first one at or
     * after seek_ts_ms are skipped here; -1 when not seeking by time. */
    int64_t seek_ts_ms;
    struct fchunk *chunk_head, *chunk_tail;
    size_t buffered_bytes;
    struct batch_reader reader;
    int is_reader_open;
    int is_scratch_lent; /* scratch holds records handed out this call */
    struct kpart *assigned_next;
};

struct ktopic {
    struct ktopic *next;
    char *name;
    int err; /* from the last metadata answer */
    int is_known;
    int32_t n_parts;
    struct kpart **parts;
    int32_t sticky; /* keyless records go here; -1: pick a new one */
};

struct kbroker {
    int32_t id;
    char host[KCLIENT_HOST_MAX];
    int port;
};

struct ktopic *metadata_topic_find(struct kappa_client *c, const char *name);
/* Finds the topic or waits (up to request.timeout.ms) for its metadata.
 * Returns 0, KAPPA_EUNKNOWN_TOPIC, KAPPA_ETIMEDOUT, KAPPA_ETRANSPORT or
 * KAPPA_ENOMEM, with c->errmsg set. */
int metadata_topic_get(struct kappa_client *c, const char *name,
                       struct ktopic **out);
/* Asks for a refresh soon (rate-limited); used after routing errors. */
void metadata_refresh_soon(struct kappa_client *c);
void metadata_tick(struct kappa_client *c, uint64_t now_ms);
/* Connection to a partition's leader, or NULL when it is not known. */
struct kconn *metadata_leader_conn(struct kappa_client *c, struct kpart *p);
/* The connection to broker id at host:port: its own, one to that address
 * (then adopted), or a new one; NULL at the connection limit. */
struct kconn *metadata_broker_conn(struct kappa_client *c, int32_t id,
                                   const char *host, int port);
/* Any usable connection (a known broker or a bootstrap server). */
struct kconn *metadata_any_conn(struct kappa_client *c);
void metadata_free(struct kappa_client *c);
/* Called by conn.c when a Hello answer names a connection's broker. */
void metadata_conn_identified(struct kappa_client *c, struct kconn *conn,
                              int32_t node_id);

/* ---- Admin (admin.c) ---------------------------------------------------- */

typedef void (*admin_encode_fn)(struct mp_writer *w, const void *args);
typedef int (*admin_parse_fn)(struct mp_reader *r, void *out);
/* Sends one request (args written by encode) to any usable connection and
 * waits for it, retrying transport failures until timeout_ms (0:
 * request.timeout.ms); parse (may be NULL) decodes the result into out.
 * Returns 0 or an error with c->detail set. */
int admin_call(struct kappa_client *c, int api, admin_encode_fn encode,
               const void *args, admin_parse_fn parse, void *out,
               int timeout_ms);

/* ---- Producer (producer.c) ---------------------------------------------- */
void producer_tick(struct kappa_client *c, uint64_t now_ms);
void producer_send(struct kappa_client *c);
void producer_deliver(struct kappa_client *c);
/* Fails every undelivered record with KAPPA_ECANCELED (client shutdown). */
void producer_cancel_all(struct kappa_client *c);
void producer_free(struct kappa_client *c);

/* ---- Consumer (consumer.c) ---------------------------------------------- */
void consumer_kick(struct kappa_client *c);
void consumer_free(struct kappa_client *c);
/* Blocking ListOffsets for one partition. */
int consumer_list_offset(struct kappa_client *c, struct kpart *p,
                         int64_t timestamp, int64_t *offset, int timeout_ms);

/* ---- Client (client.c) -------------------------------------------------- */

/* The clock reading record timestamps share (client_record_ms). */
struct kclock {
    int64_t wall_ns;   /* last CLOCK_REALTIME reading */
    int64_t wall_ms;   /* the same in ms, handed out */
    int64_t tick_ns;   /* CLOCK_REALTIME_COARSE at that reading */
    uint32_t n_served; /* records that got wall_ms */
    uint32_t n_budget; /* records it may serve; 0 forces a new reading */
};

struct kappa_client {
    struct kappa_conf conf;
    uv_loop_t loop;
    uv_timer_t tick_timer;
    uv_timer_t wake_timer;   /* bounds one blocking loop run */
    uv_timer_t linger_timer; /* seals batches whose linger.ms passed */
    int n_handles_open;
    int is_closing;
    char errmsg[KAPPA_ERRMSG_SIZE]; /* of the last failed public call */
    char detail[KAPPA_ERRMSG_SIZE]; /* cause gathered by lower layers */
    uint32_t rng;
    uint32_t next_correlation_id;
    uint32_t frame_max_bytes;

    /* Bootstrap servers, parsed. */
    struct kbroker bootstrap[KCLIENT_BOOTSTRAP_MAX];
    unsigned n_bootstrap;
    unsigned bootstrap_next;

    struct kconn *conns[KCLIENT_CONNS_MAX];
    unsigned n_conns;

    /* Metadata cache. */
    struct ktopic *topics;
    unsigned n_topics;
    struct ktopic *last_topic; /* one-entry cache for the produce path */
    struct kbroker *brokers;
    unsigned n_brokers;
    int32_t controller;
    int is_metadata_in_flight;
    int is_metadata_wanted;
    uint64_t metadata_generation; /* bumped by each answer or failure */
    int metadata_last_err;
    uint64_t metadata_next_ms;

    /* Producer. */
    kappa_delivery_cb delivery_cb;
    void *delivery_arg;
    unsigned send_pass;
    struct pbatch *batch_pool;
    size_t batch_pool_bytes;     /* memory of the pooled batches */
    unsigned batch_pool_low;     /* fewest pooled since the last trim */
    uint64_t batch_pool_trim_ms; /* next trim (monotonic) */
    /* One-entry topic cache of kappa_produce; name length for the compare. */
    struct ktopic *produce_topic;
    size_t produce_topic_len;
    struct kclock clock;
    struct pbatch *open_head, *open_tail; /* open batches, oldest first */
    struct kpart *done_parts; /* partitions with a finished batch at head */
    int is_delivering;
    unsigned n_batch_pool;
    struct kpart *ready_parts;
    size_t outq_bytes;
    size_t outq_records;
    uint64_t n_delivered; /* reports served, for kappa_poll */
    /* kappa_produce_sync records carry an address inside sync_markers as
     * opaque, so their reports never reach the application's callback,
     * even when they arrive after the call gave up. */
    char sync_markers[64];
    unsigned sync_seq;
    void *sync_opaque; /* marker of the call now waiting, or NULL */
    int sync_err;
    int64_t sync_offset;
    int is_sync_done;

    /* Consumer. */
    struct kpart *assigned;
    struct fchunk *retired; /* released at the next kappa_consume */
    int has_consumer_news;  /* data or an error event arrived */
};

uint64_t client_now_ms(void);
/* Wall-clock time in ms for a record produced now. Reading CLOCK_REALTIME
 * costs 30-100 ns in VMs, as much as the rest of kappa_produce, so one
 * reading serves several records; see client.c for the bound on its age
 * (about 1 ms). */
int64_t client_record_ms(struct kappa_client *c);
/* The next client_record_ms reads the clock: called after the loop ran. */
static inline void client_clock_expire(struct kappa_client *c)
{
    c->clock.n_budget = 0;
}
static inline void client_begin(struct kappa_client *c)
{
    c->detail[0] = '\0';
}
/* Runs the loop until done(c, arg) is non-zero or timeout_ms passes
 * (negative: no limit). done may be NULL to just run for timeout_ms.
 * Returns 0 or KAPPA_ETIMEDOUT. */
typedef int (*client_done_fn)(struct kappa_client *c, void *arg);
int client_wait(struct kappa_client *c, client_done_fn done, void *arg,
                int timeout_ms);
/* Sets c->errmsg to "context: cause" and returns rv; the cause is
 * c->detail when a lower layer filled it in, else the code's message.
 * Public calls clear c->detail on entry (client_begin). */
int client_error(struct kappa_client *c, int rv, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void client_linger_arm(struct kappa_client *c, uint64_t delay_ms);

/* Copies a response's error message (or the code's fixed message) into
 * c->detail and returns the code. */
int client_resp_error(struct kappa_client *c, const struct kresp *resp);
#endif /* KAPPA_CLIENT_INT_H */
