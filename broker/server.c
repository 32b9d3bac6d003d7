/* The server: listener, per-iteration flush, housekeeping and shutdown.
 *
 * Happy path: server_start opens the topics, binds, and starts a prepare
 * handle that runs once per loop iteration (before the loop blocks): it
 * gives every connection with buffered whole frames one bounded pass, then
 * writes every connection's queued replies (Redis's beforeSleep).
 *
 * Shutdown (SIGTERM/SIGINT): RUNNING -> DRAINING: the listener closes,
 * connections stop reading, parked fetches are answered; produce requests
 * waiting for an fdatasync are answered when it completes. When no request
 * and no group commit is left and every reply has been written (or
 * DRAIN_TIMEOUT_MS passed), DRAINING -> CLOSING: connections and handles
 * close and every log is fsynced and closed. The loop then runs out of
 * handles and uv_run returns.
 *
 * Failure modes: a bind error fails server_start (handles opened so far are
 * closed; the caller runs the loop once more to finish). Accept errors are
 * logged and the listener keeps going. */
#include "server.h"

#include <string.h>
#include <time.h>

#include "broker/cluster.h"
#include "broker/conn.h"
#include "broker/dispatch.h"
#include "common/assert.h"
#include "common/err.h"
#include "common/log.h"

#define COMPONENT                "server"
#define LISTEN_BACKLOG           511
#define DRAIN_TIMEOUT_MS         10000
#define PROTOCOL_LOG_INTERVAL_MS 1000

static void handle_close_cb(uv_handle_t *h)
{
    struct server *s = h->data;
    KAPPA_ASSERT(s->n_handles > 0);
    if (--s->n_handles == 0 && s->state == SERVER_CLOSING) {
        s->state = SERVER_CLOSED;
    }
}

static void close_handle(struct server *s, void *handle)
{
    uv_handle_t *h = handle;
    (void)s;
    if (!uv_is_closing(h)) {
        uv_close(h, handle_close_cb);
    }
}

int server_protocol_log_allowed(struct server *s, uint64_t *suppressed)
{
    uint64_t now = server_now_ms(s);
    if (s->last_protocol_log_ms != 0 &&
        now - s->last_protocol_log_ms < PROTOCOL_LOG_INTERVAL_MS) {
        s->log_suppressed++;
        return 0;
    }
    s->last_protocol_log_ms = now == 0 ? 1 : now;
    *suppressed = s->log_suppressed;
    s->log_suppressed = 0;
    return 1;
}

static void idle_cb(uv_idle_t *h)
{
    (void)h; /* only keeps uv_run's poll from blocking */
}

void server_backlog_wake(struct server *s)
{
    if (s->state != SERVER_RUNNING) {
        return;
    }
    (void)uv_idle_start(&s->idle, idle_cb);
}

static void prepare_cb(uv_prepare_t *h)
{
    struct server *s = h->data;
    struct list pass;

    list_move_all(&pass, &s->backlog_list);
    while (!list_is_empty(&pass)) {
        struct conn *c = list_entry(pass.next, struct conn, backlog_link);
        list_remove(&c->backlog_link);
        conn_process(c);
    }
    if (list_is_empty(&s->backlog_list)) {
        (void)uv_idle_stop(&s->idle);
    }
    /* Group commit: one fdatasync per partition covers every append of the
     * pass, started before the loop blocks. */
    partition_sync_dirty(&s->topics.dirty);
    while (!list_is_empty(&s->flush_list)) {
        conn_flush(list_entry(s->flush_list.next, struct conn, flush_link));
    }
}

static void connection_cb(uv_stream_t *listener, int status)
{
    struct server *s = listener->data;
    if (status < 0) {
        kappa_log(KAPPA_LOG_WARN, COMPONENT, "accept: %s", uv_strerror(status));
        return;
    }
    if (s->state == SERVER_RUNNING) {
        (void)conn_accept(s);
    }
}

static int64_t wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void housekeeping_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    topics_housekeep(&s->topics, wall_now_ms());
}

static void close_all_handles(struct server *s);

static void begin_close(struct server *s)
{
    struct list *pos;
    s->state = SERVER_CLOSING;
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "closing connections=%u", s->n_conns);
    for (pos = s->conns.next; pos != &s->conns; pos = pos->next) {
        conn_close(list_entry(pos, struct conn, link));
    }
    close_all_handles(s);
    topics_close(&s->topics);
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "logs closed");
}

static int replies_pending(struct server *s)
{
    struct list *pos;
    for (pos = s->conns.next; pos != &s->conns; pos = pos->next) {
        struct conn *c = list_entry(pos, struct conn, link);
        if (c->state != CONN_CLOSING && (c->is_writing || c->out.len > 0)) {
            return 1;
        }
    }
    return 0;
}

void server_poke(struct server *s)
{
    if (s->state != SERVER_DRAINING) {
        return;
    }
    /* Logs cannot close under an fdatasync, whatever the timeout says. */
    if (s->n_reqs > 0 || topics_is_syncing(&s->topics) || s->cluster != NULL) {
        return;
    }
    if (!s->is_drain_timed_out && replies_pending(s)) {
        return;
    }
    begin_close(s);
}

static void drain_timer_cb(uv_timer_t *t)
{
    struct server *s = t->data;
    kappa_log(KAPPA_LOG_WARN, COMPONENT,
              "shutdown: replies still unwritten after %d ms; closing",
              DRAIN_TIMEOUT_MS);
    s->is_drain_timed_out = 1;
    server_poke(s);
}

static void server_topics_idle_cb(struct topics *t)
{
    server_poke(t->data);
}

static void cluster_closed_cb(void *arg)
{
    struct server *s = arg;
    s->cluster = NULL;
    s->is_cluster_closing = 0;
    server_poke(s);
}

struct partition *server_partition(struct server *s, const char *name,
                                   size_t len, int64_t partition, int *err,
                                   char *msg)
{
    if (s->cluster != NULL) {
        return cluster_partition(s->cluster, name, len, partition, err, msg);
    }
    return topics_partition(&s->topics, name, len, partition, err);
}

void server_shutdown(struct server *s)
{
    struct list *pos;
    if (s->state != SERVER_RUNNING) {
        return;
    }
    s->state = SERVER_DRAINING;
    kappa_log(KAPPA_LOG_INFO, COMPONENT,
              "shutting down: connections=%u requests=%llu", s->n_conns,
              (unsigned long long)s->n_reqs);
    close_handle(s, &s->listener);
    metrics_close(s->metrics);
    s->metrics = NULL;
    (void)uv_timer_stop(&s->housekeeping_timer);
    (void)uv_idle_stop(&s->idle);
    for (pos = s->conns.next; pos != &s->conns; pos = pos->next) {
        conn_update_reading(list_entry(pos, struct conn, link));
    }
    fetch_answer_all(s);
    (void)uv_timer_start(&s->drain_timer, drain_timer_cb, DRAIN_TIMEOUT_MS, 0);
    if (s->cluster != NULL) {
        /* Pending proposals complete (ENOT_LEADER) as the groups close. */
        s->is_cluster_closing = 1;
        cluster_close(s->cluster, cluster_closed_cb, s);
    }
    server_poke(s);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "received %s",
              signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_shutdown(s);
}

static void init_lists(struct server *s)
{
    list_init(&s->conns);
    list_init(&s->flush_list);
    list_init(&s->backlog_list);
    list_init(&s->parked_fetches);
}

/* The server's handles, in initialisation order. */
static uv_handle_t *handle_at(struct server *s, unsigned i)
{
    uv_handle_t *handles[] = {
        (uv_handle_t *)&s->prepare,     (uv_handle_t *)&s->idle,
        (uv_handle_t *)&s->fetch_timer, (uv_handle_t *)&s->housekeeping_timer,
        (uv_handle_t *)&s->drain_timer, (uv_handle_t *)&s->listener,
        (uv_handle_t *)&s->sigterm,     (uv_handle_t *)&s->sigint,
    };
    return i < sizeof handles / sizeof handles[0] ? handles[i] : NULL;
}

static int init_handle(struct server *s, unsigned i)
{
    switch (i) {
    case 0:
        return uv_prepare_init(s->loop, &s->prepare);
    case 1:
        return uv_idle_init(s->loop, &s->idle);
    case 2:
        return uv_timer_init(s->loop, &s->fetch_timer);
    case 3:
        return uv_timer_init(s->loop, &s->housekeeping_timer);
    case 4:
        return uv_timer_init(s->loop, &s->drain_timer);
    case 5:
        return uv_tcp_init(s->loop, &s->listener);
    case 6:
        return uv_signal_init(s->loop, &s->sigterm);
    default:
        return uv_signal_init(s->loop, &s->sigint);
    }
}

/* Initialises every handle up front; n_handles counts the ones that need
 * closing, so a failure closes exactly those. */
static int init_handles(struct server *s)
{
    for (unsigned i = 0; handle_at(s, i) != NULL; i++) {
        int rv = init_handle(s, i);
        if (rv != 0) {
            return KAPPA_EIO;
        }
        handle_at(s, i)->data = s;
        s->n_handles++;
        s->n_handles_init++;
    }
    return 0;
}

static void close_all_handles(struct server *s)
{
    for (unsigned i = 0; i < s->n_handles_init; i++) {
        close_handle(s, handle_at(s, i));
    }
}

static void record_bound_address(struct server *s)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    (void)uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, s->bound_host, sizeof s->bound_host);
        s->bound_port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, s->bound_host, sizeof s->bound_host);
        s->bound_port = ntohs(a->sin_port);
    }
}

static int bind_listener(struct server *s, char *errmsg)
{
    const struct broker_config *cfg = s->cfg;
    struct sockaddr_storage addr;
    int rv;

    if (strchr(cfg->listen_host, ':') != NULL) {
        rv = uv_ip6_addr(cfg->listen_host, cfg->listen_port,
                         (struct sockaddr_in6 *)&addr);
    } else {
        rv = uv_ip4_addr(cfg->listen_host, cfg->listen_port,
                         (struct sockaddr_in *)&addr);
    }
    if (rv == 0) {
        rv = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
    }
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&s->listener, LISTEN_BACKLOG,
                       connection_cb);
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "listen %s:%d: %s", cfg->listen_host,
                            cfg->listen_port, uv_strerror(rv));
        return KAPPA_EIO;
    }
    record_bound_address(s);
    return 0;
}

static int start_watchers(struct server *s, char *errmsg)
{
    uint64_t hk = (uint64_t)s->cfg->housekeeping_interval_ms;
    if (uv_prepare_start(&s->prepare, prepare_cb) != 0 ||
        uv_timer_start(&s->housekeeping_timer, housekeeping_cb, hk, hk) != 0 ||
        uv_signal_start(&s->sigterm, signal_cb, SIGTERM) != 0 ||
        uv_signal_start(&s->sigint, signal_cb, SIGINT) != 0) {
        kappa_errmsg_printf(errmsg, "cannot start loop watchers");
        return KAPPA_EIO;
    }
    return 0;
}

int server_start(struct server *s, uv_loop_t *loop,
                 const struct broker_config *cfg, char *errmsg)
{
    int rv;
    memset(s, 0, sizeof *s);
    s->loop = loop;
    s->cfg = cfg;
    init_lists(s);
    rv = topics_open(&s->topics, loop, cfg, errmsg);
    if (rv != 0) {
        return rv;
    }
    s->topics.idle_cb = server_topics_idle_cb;
    s->topics.data = s;
    rv = init_handles(s);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "cannot initialise loop handles");
        goto err_after_topics;
    }
    if ((rv = bind_listener(s, errmsg)) != 0 ||
        (rv = start_watchers(s, errmsg)) != 0) {
        goto err_after_topics;
    }
    if (cfg->cluster_listen[0] != '\0') {
        rv = cluster_start(&s->cluster, s, loop, cfg, s->bound_host,
                           s->bound_port, errmsg);
        if (rv != 0) {
            goto err_after_cluster;
        }
    }
    rv = metrics_start(&s->metrics, s, errmsg);
    if (rv != 0) {
        goto err_after_cluster;
    }
    s->state = SERVER_RUNNING;
    return 0;

err_after_cluster:
    if (s->cluster != NULL) {
        s->is_cluster_closing = 1;
        cluster_close(s->cluster, cluster_closed_cb, s);
    }
err_after_topics:
    /* Handles that were initialised close in the caller's next uv_run. */
    s->state = SERVER_CLOSING;
    close_all_handles(s);
    topics_close(&s->topics);
    return rv;
}
