/* The kappad server: one libuv loop owning the listener, the connections,
 * the topic registry, the parked-fetch timer, housekeeping and signal-driven
 * shutdown. Loop thread only. */
#ifndef KAPPA_BROKER_SERVER_H
#define KAPPA_BROKER_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "broker/config.h"
#include "broker/list.h"
#include "broker/metrics.h"
#include "broker/topics.h"

enum server_state {
    SERVER_INIT = 0,
    SERVER_RUNNING,  /* accepting and serving */
    SERVER_DRAINING, /* no new requests; finishing fsyncs and replies */
    SERVER_CLOSING,  /* handles closing; the loop ends when they are closed */
    SERVER_CLOSED,
};

struct server {
    uv_loop_t *loop;
    const struct broker_config *cfg;
    enum server_state state;
    struct topics topics;
    uv_tcp_t listener;
    uv_prepare_t prepare;   /* once per iteration: backlog, then flush */
    uv_idle_t idle;         /* keeps the poll from blocking with backlog */
    uv_timer_t fetch_timer; /* earliest parked fetch deadline */
    uv_timer_t housekeeping_timer;
    uv_timer_t drain_timer; /* bounds how long shutdown waits on clients */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    unsigned n_handles;      /* server handles not yet closed */
    unsigned n_handles_init; /* handles initialised (closed at the end) */
    struct list conns;
    struct list flush_list;     /* conns with replies to write */
    struct list backlog_list;   /* conns with whole frames left unprocessed */
    struct list parked_fetches; /* ordered by deadline */
    uint32_t n_conns;
    uint64_t n_reqs; /* async requests alive (produce, fetch, delete) */
    uint64_t next_conn_id;
    int is_drain_timed_out;
    char bound_host[64];
    int bound_port;
    struct cluster *cluster; /* cluster mode; NULL on a single node */
    int is_cluster_closing;  /* cluster_close called, callback pending */
    uint64_t log_suppressed; /* protocol error lines rate-limited away */
    uint64_t last_protocol_log_ms;
    struct metrics_node stats; /* hot-path counters, read by metrics.c */
    struct metrics *metrics;   /* HTTP endpoint; NULL when off */
};

/* Opens the topics, binds and listens, starts timers and signal handlers.
 * Returns 0 or a KAPPA_E* code with errmsg; on error nothing is left open
 * (closing handles may still need one uv_run). */
int server_start(struct server *s, uv_loop_t *loop,
                 const struct broker_config *cfg, char *errmsg);

/* Begins the graceful shutdown (what SIGTERM does). Idempotent. */
void server_shutdown(struct server *s);

/* Re-checks whether shutdown can move on; called when a request, a write or
 * a group commit finishes. Cheap while running. */
void server_poke(struct server *s);

/* Makes the next loop iteration run the backlog pass without blocking in
 * poll (some connection has whole frames buffered). */
void server_backlog_wake(struct server *s);

struct partition;

/* Resolves (topic, partition) for a request part: the local registry on a
 * single node, the replica this node leads in cluster mode. Returns NULL
 * with *err (KAPPA_EUNKNOWN_TOPIC, KAPPA_EBAD_PARTITION, KAPPA_ENOT_LEADER)
 * and, when msg is not NULL, a message (KAPPA_ERRMSG_SIZE) naming the
 * leader. */
struct partition *server_partition(struct server *s, const char *name,
                                   size_t len, int64_t partition, int *err,
                                   char *msg);

/* Milliseconds since the loop started (monotonic, for deadlines). */
static inline uint64_t server_now_ms(const struct server *s)
{
    return uv_now(s->loop);
}

/* Returns 1 when a protocol-error line may be logged now (at most one per
 * second; the number suppressed is reported with the next one). */
int server_protocol_log_allowed(struct server *s, uint64_t *suppressed);

#endif /* KAPPA_BROKER_SERVER_H */
