/* The metrics endpoint: a minimal HTTP/1.1 server on the broker's loop.
 *
 * Happy path: a connection is accepted (at most METRICS_CONNS_MAX at once),
 * reads until the blank line ending the request head, answers GET /metrics
 * (Prometheus text format 0.0.4, built now from the plain counters) or GET
 * /ready (200 "ready" / 503), writes the whole response and closes. No
 * keep-alive, no request body.
 *
 * Failure modes: a head over METRICS_REQUEST_BYTES_MAX or a malformed
 * request line gets 400 and the connection closes; any other path or
 * method gets 404; a read error or EOF before the head closes silently;
 * out of memory while building the body gets 500. Over the connection cap
 * the connection is accepted and closed at once. Nothing here touches the
 * broker's state. */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "broker/cluster.h"
#include "broker/partition.h"
#include "broker/server.h"
#include "broker/topics.h"
#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "consensus/group.h"

#define COMPONENT      "metrics"
#define ADDR_FILE      "metrics.addr"
#define LISTEN_BACKLOG 64

/* Bucket upper bounds in seconds, and in nanoseconds for the hot path. */
static const char *const bucket_le[METRICS_LATENCY_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",   "0.25",   "0.5",   "1",    "2.5",
};
static const uint64_t bucket_ns[METRICS_LATENCY_BUCKETS] = {
    500000ull,    1000000ull,   2500000ull,    5000000ull,
    10000000ull,  25000000ull,  50000000ull,   100000000ull,
    250000000ull, 500000000ull, 1000000000ull, 2500000000ull,
};

struct mconn {
    struct metrics *m;
    struct mconn *prev, *next;
    uv_tcp_t tcp;
    uv_write_t write_req;
    struct buf out;
    size_t len;
    bool is_done; /* a response is queued or the connection is closing */
    char req[METRICS_REQUEST_BYTES_MAX];
};

struct metrics {
    struct server *s;
    uv_tcp_t listener;
    struct mconn *conns;
    unsigned n_conns;
    bool is_listener_open; /* close callback not yet run */
    bool is_closing;
};

void metrics_observe_latency(struct metrics_partition *m, uint64_t ns)
{
    for (unsigned i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        if (ns <= bucket_ns[i]) {
            m->latency_buckets[i]++;
            break;
        }
    }
    m->latency_count++;
    m->latency_sum_ns += ns;
}

static void maybe_free(struct metrics *m)
{
    if (m->is_closing && !m->is_listener_open && m->n_conns == 0) {
        kappa_free(m);
    }
}

/* ---- text building ---------------------------------------------------- */

struct out {
    struct buf b;
    int err;
    uint64_t n; /* partitions counted by count_one */
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
outf(struct out *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;
    if (o->err != 0) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        o->err = KAPPA_EINVAL;
        return;
    }
    o->err = buf_append(&o->b, line, (size_t)n);
}

static void family(struct out *o, const char *name, const char *type,
                   const char *help)
{
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One hosted partition, as the scrape sees it. */
struct ppart {
    const char *topic;
    size_t topic_len;
    uint32_t index;
    struct partition *p;
    struct group *g; /* cluster mode only */
};

typedef void (*ppart_fn)(struct out *o, const struct ppart *pp);

struct walk {
    struct out *o;
    ppart_fn fn;
};

static void walk_topic(struct topic *t, void *arg)
{
    struct walk *w = arg;
    if (t->is_deleting) {
        return;
    }
    for (uint32_t i = 0; i < t->n_partitions; i++) {
        struct ppart pp = {t->name, t->name_len, i, &t->partitions[i], NULL};
        w->fn(w->o, &pp);
    }
}

static void walk_replica(const char *topic, uint32_t index, struct partition *p,
                         struct group *g, void *arg)
{
    struct walk *w = arg;
    struct ppart pp = {topic, strlen(topic), index, p, g};
    w->fn(w->o, &pp);
}

static void foreach_partition(struct server *s, struct out *o, ppart_fn fn)
{
    struct walk w = {o, fn};
    if (s->cluster != NULL) {
        cluster_foreach_replica(s->cluster, walk_replica, &w);
    } else {
        topics_foreach(&s->topics, walk_topic, &w);
    }
}

#define LABELS         "topic=\"%.*s\",partition=\"%" PRIu32 "\""
#define LABEL_ARGS(pp) (int)(pp)->topic_len, (pp)->topic, (pp)->index

static void put_hwm(struct out *o, const struct ppart *pp)
{
    outf(o, "kappa_partition_high_watermark{" LABELS "} %" PRId64 "\n",
         LABEL_ARGS(pp), partition_high_watermark(pp->p));
}

static void put_leo(struct out *o, const struct ppart *pp)
{
    struct log *l = pp->g != NULL ? group_log(pp->g) : pp->p->log;
    outf(o, "kappa_partition_log_end_offset{" LABELS "} %" PRId64 "\n",
         LABEL_ARGS(pp), l != NULL ? log_end_offset(l) : -1);
}

static void put_is_leader(struct out *o, const struct ppart *pp)
{
    int v = pp->g != NULL ? group_is_leader(pp->g) : 1;
    outf(o, "kappa_partition_is_leader{" LABELS "} %d\n", LABEL_ARGS(pp), v);
}

static void put_commit(struct out *o, const struct ppart *pp)
{
    struct group_status st;
    if (pp->g == NULL) {
        return;
    }
    group_status_get(pp->g, &st);
    outf(o, "kappa_partition_commit_index{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), st.commit_index);
}

static void put_leader_changes(struct out *o, const struct ppart *pp)
{
    if (pp->g == NULL) {
        return;
    }
    outf(o, "kappa_partition_leader_changes_total{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), group_leader_changes(pp->g));
}

static void put_produce(struct out *o, const struct ppart *pp)
{
    outf(o, "kappa_produce_records_total{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), pp->p->stats.produce_records);
}

static void put_produce_bytes(struct out *o, const struct ppart *pp)
{
    outf(o, "kappa_produce_bytes_total{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), pp->p->stats.produce_bytes);
}

static void put_fetch(struct out *o, const struct ppart *pp)
{
    outf(o, "kappa_fetch_records_total{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), pp->p->stats.fetch_records);
}

static void put_fetch_bytes(struct out *o, const struct ppart *pp)
{
    outf(o, "kappa_fetch_bytes_total{" LABELS "} %" PRIu64 "\n", LABEL_ARGS(pp),
         pp->p->stats.fetch_bytes);
}

static void put_latency(struct out *o, const struct ppart *pp)
{
    const struct metrics_partition *st = &pp->p->stats;
    uint64_t cum = 0;
    for (unsigned i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cum += st->latency_buckets[i];
        outf(o,
             "kappa_produce_latency_seconds_bucket{" LABELS
             ",le=\"%s\"} %" PRIu64 "\n",
             LABEL_ARGS(pp), bucket_le[i], cum);
    }
    outf(o,
         "kappa_produce_latency_seconds_bucket{" LABELS ",le=\"+Inf\"} %" PRIu64
         "\n",
         LABEL_ARGS(pp), st->latency_count);
    outf(o, "kappa_produce_latency_seconds_sum{" LABELS "} %.9f\n",
         LABEL_ARGS(pp), (double)st->latency_sum_ns / 1e9);
    outf(o, "kappa_produce_latency_seconds_count{" LABELS "} %" PRIu64 "\n",
         LABEL_ARGS(pp), st->latency_count);
}

static void count_one(struct out *o, const struct ppart *pp)
{
    (void)pp;
    o->n++;
}

static void put_node(struct out *o, struct server *s)
{
    struct group_host *h =
        s->cluster != NULL ? group_host_of_loop(s->loop) : NULL;
    uint64_t fsyncs = h != NULL ? h->syncer.n_syncs : partition_fsyncs_total();

    family(o, "kappa_connections", "gauge", "Client connections open.");
    outf(o, "kappa_connections %" PRIu32 "\n", s->n_conns);
    family(o, "kappa_bytes_in_total", "counter",
           "Bytes read from client connections.");
    outf(o, "kappa_bytes_in_total %" PRIu64 "\n", s->stats.bytes_in);
    family(o, "kappa_bytes_out_total", "counter",
           "Bytes written to client connections.");
    outf(o, "kappa_bytes_out_total %" PRIu64 "\n", s->stats.bytes_out);
    family(o, "kappa_requests_total", "counter",
           "Client request frames received, by API.");
    for (int i = 0; i < METRICS_API_SLOTS; i++) {
        outf(o, "kappa_requests_total{api=\"%s\"} %" PRIu64 "\n",
             i < WIRE_API_COUNT ? wire_api_name(i) : "unknown",
             s->stats.requests[i]);
    }
    family(o, "kappa_fsyncs_total", "counter",
           "Group-commit fdatasync calls on partition data.");
    outf(o, "kappa_fsyncs_total %" PRIu64 "\n", fsyncs);
    o->n = 0;
    foreach_partition(s, o, count_one);
    family(o, "kappa_partitions_hosted", "gauge",
           "Partitions (replicas in cluster mode) hosted by this node.");
    outf(o, "kappa_partitions_hosted %" PRIu64 "\n", o->n);
    family(o, "kappa_raft_groups", "gauge",
           "Raft groups open on this node (0 on a single node).");
    outf(o, "kappa_raft_groups %u\n", h != NULL ? h->n_groups : 0u);
}

struct pfamily {
    const char *name;
    const char *type;
    const char *help;
    ppart_fn fn;
    bool is_cluster_only;
};

static const struct pfamily pfamilies[] = {
    {"kappa_partition_high_watermark", "gauge",
     "Offset below which records are durable (committed) and served.", put_hwm,
     false},
    {"kappa_partition_log_end_offset", "gauge",
     "Offset one past the last record in the local log.", put_leo, false},
    {"kappa_partition_is_leader", "gauge",
     "1 when this node leads the partition.", put_is_leader, false},
    {"kappa_partition_commit_index", "gauge",
     "Raft commit index of the partition group.", put_commit, true},
    {"kappa_partition_leader_changes_total", "counter",
     "Leader changes seen by this replica's Raft group.", put_leader_changes,
     true},
    {"kappa_produce_records_total", "counter",
     "Records appended (single node) or committed (cluster) by Produce.",
     put_produce, false},
    {"kappa_produce_bytes_total", "counter",
     "Record batch bytes appended or committed by Produce.", put_produce_bytes,
     false},
    {"kappa_fetch_records_total", "counter", "Records sent in Fetch replies.",
     put_fetch, false},
    {"kappa_fetch_bytes_total", "counter",
     "Record batch bytes sent in Fetch replies.", put_fetch_bytes, false},
    {"kappa_produce_latency_seconds", "histogram",
     "Produce latency from request arrival to the part being durable "
     "(acks=-1, cluster) or appended (acks=0/1).",
     put_latency, false},
};

static void put_meta(struct out *o, struct server *s)
{
    struct group_host *h = group_host_of_loop(s->loop);
    struct group *meta = h != NULL ? group_find(h, GROUP_META_ID) : NULL;
    if (meta == NULL) {
        return;
    }
    family(o, "kappa_meta_leader_changes_total", "counter",
           "Leader changes seen by the metadata Raft group.");
    outf(o, "kappa_meta_leader_changes_total %" PRIu64 "\n",
         group_leader_changes(meta));
    family(o, "kappa_meta_is_leader", "gauge",
           "1 when this node leads the metadata group.");
    outf(o, "kappa_meta_is_leader %d\n", group_is_leader(meta) ? 1 : 0);
}

static void build_metrics(struct out *o, struct server *s)
{
    put_node(o, s);
    if (s->cluster != NULL) {
        put_meta(o, s);
    }
    for (size_t i = 0; i < sizeof pfamilies / sizeof pfamilies[0]; i++) {
        const struct pfamily *f = &pfamilies[i];
        if (f->is_cluster_only && s->cluster == NULL) {
            continue;
        }
        family(o, f->name, f->type, f->help);
        foreach_partition(s, o, f->fn);
    }
}

static bool is_ready(struct server *s)
{
    if (s->state != SERVER_RUNNING) {
        return false;
    }
    return s->cluster == NULL || cluster_is_ready(s->cluster);
}

/* ---- HTTP --------------------------------------------------------------- */

static void conn_close_cb(uv_handle_t *h)
{
    struct mconn *c = h->data;
    struct metrics *m = c->m;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        m->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    m->n_conns--;
    buf_free(&c->out);
    kappa_free(c);
    maybe_free(m);
}

static void mconn_close(struct mconn *c)
{
    c->is_done = true;
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
        uv_close((uv_handle_t *)&c->tcp, conn_close_cb);
    }
}

static void write_cb(uv_write_t *req, int status)
{
    (void)status;
    mconn_close(req->data);
}

/* Queues status line, headers and body (body_len bytes at body), then
 * closes once written. */
static void respond(struct mconn *c, const char *status,
                    const char *content_type, const void *body, size_t body_len)
{
    char head[256];
    uv_buf_t b;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, content_type, body_len);
    c->is_done = true;
    (void)uv_read_stop((uv_stream_t *)&c->tcp);
    if (n < 0 || (size_t)n >= sizeof head ||
        buf_append(&c->out, head, (size_t)n) != 0 ||
        buf_append(&c->out, body, body_len) != 0) {
        mconn_close(c);
        return;
    }
    b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, write_cb) != 0) {
        mconn_close(c);
    }
}

#define TEXT_PLAIN "text/plain; charset=utf-8"

static void respond_text(struct mconn *c, const char *status, const char *text)
{
    respond(c, status, TEXT_PLAIN, text, strlen(text));
}

static void serve_metrics(struct mconn *c)
{
    struct out o = {.err = 0, .n = 0};
    buf_init(&o.b);
    build_metrics(&o, c->m->s);
    if (o.err != 0) {
        buf_free(&o.b);
        respond_text(c, "500 Internal Server Error", "out of memory\n");
        return;
    }
    respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", o.b.data,
            o.b.len);
    buf_free(&o.b);
}

/* Handles the request head in c->req[0..c->len) (complete). Only the
 * request line matters: "METHOD SP TARGET SP HTTP/1.x". */
static void handle_request(struct mconn *c)
{
    const char *p = c->req;
    const char *end = memchr(p, '\n', c->len);
    const char *sp1, *sp2, *q;
    size_t path_len;

    if (end == NULL || (sp1 = memchr(p, ' ', (size_t)(end - p))) == NULL ||
        (sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1))) == NULL ||
        (size_t)(end - sp2) < 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        respond_text(c, "400 Bad Request", "bad request\n");
        return;
    }
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    path_len = (size_t)((q != NULL ? q : sp2) - (sp1 + 1));
    if ((size_t)(sp1 - p) != 3 || memcmp(p, "GET", 3) != 0) {
        respond_text(c, "404 Not Found", "not found\n");
    } else if (path_len == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0) {
        serve_metrics(c);
    } else if (path_len == 6 && memcmp(sp1 + 1, "/ready", 6) == 0) {
        if (is_ready(c->m->s)) {
            respond_text(c, "200 OK", "ready\n");
        } else {
            respond_text(c, "503 Service Unavailable", "not ready\n");
        }
    } else {
        respond_text(c, "404 Not Found", "not found\n");
    }
}

/* Whether the head is complete: a blank line ("\r\n\r\n" or "\n\n"). */
static bool head_complete(const struct mconn *c)
{
    for (size_t i = 1; i < c->len; i++) {
        if (c->req[i] == '\n' &&
            (c->req[i - 1] == '\n' ||
             (i >= 3 && c->req[i - 1] == '\r' && c->req[i - 2] == '\n' &&
              c->req[i - 3] == '\r'))) {
            return true;
        }
    }
    return false;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct mconn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - c->len));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct mconn *c = stream->data;
    (void)b;
    if (c->is_done) {
        return;
    }
    if (nread < 0) {
        mconn_close(c);
        return;
    }
    c->len += (size_t)nread;
    if (head_complete(c)) {
        handle_request(c);
    } else if (c->len == sizeof c->req) {
        respond_text(c, "400 Bad Request", "request too large\n");
    }
}

static void reject_close_cb(uv_handle_t *h)
{
    kappa_free(h);
}

static void reject(struct metrics *m)
{
    uv_tcp_t *t = kappa_malloc(sizeof *t);
    if (t == NULL) {
        return;
    }
    if (uv_tcp_init(m->s->loop, t) != 0) {
        kappa_free(t);
        return;
    }
    (void)uv_accept((uv_stream_t *)&m->listener, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, reject_close_cb);
}

static void connection_cb(uv_stream_t *listener, int status)
{
    struct metrics *m = listener->data;
    struct mconn *c;
    if (status < 0 || m->is_closing) {
        return;
    }
    if (m->n_conns >= METRICS_CONNS_MAX ||
        (c = kappa_malloc(sizeof *c)) == NULL) {
        reject(m);
        return;
    }
    memset(c, 0, offsetof(struct mconn, req));
    c->m = m;
    buf_init(&c->out);
    if (uv_tcp_init(m->s->loop, &c->tcp) != 0) {
        kappa_free(c);
        reject(m);
        return;
    }
    c->tcp.data = c;
    c->next = m->conns;
    if (m->conns != NULL) {
        m->conns->prev = c;
    }
    m->conns = c;
    m->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0) {
        mconn_close(c);
    }
}

/* ---- start and close ---------------------------------------------------- */

/* Writes "HOST:PORT\n" to DATA/metrics.addr via a temporary file and a
 * rename, like kappad.addr. */
static int write_addr_file(const char *dir, const char *host, int port,
                           char *errmsg)
{
    char tmp[CONFIG_PATH_BYTES_MAX + 32];
    char path[CONFIG_PATH_BYTES_MAX + 32];
    char line[128];
    int n, fd, rv = 0;

    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, ADDR_FILE);
    snprintf(path, sizeof path, "%s/%s", dir, ADDR_FILE);
    n = snprintf(line, sizeof line,
                 strchr(host, ':') != NULL ? "[%s]:%d\n" : "%s:%d\n", host,
                 port);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", tmp, strerror(errno));
        return KAPPA_EIO;
    }
    if (write(fd, line, (size_t)n) != n || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", tmp, strerror(errno));
        rv = KAPPA_EIO;
    }
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0) {
        kappa_errmsg_printf(errmsg, "rename %s: %s", path, strerror(errno));
        rv = KAPPA_EIO;
    }
    return rv;
}

static void listener_close_cb(uv_handle_t *h)
{
    struct metrics *m = h->data;
    m->is_listener_open = false;
    maybe_free(m);
}

static int bind_and_listen(struct metrics *m, char *host, size_t host_size,
                           int *port)
{
    const struct broker_config *cfg = m->s->cfg;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    int rv;

    if (strchr(cfg->metrics_host, ':') != NULL) {
        rv = uv_ip6_addr(cfg->metrics_host, cfg->metrics_port,
                         (struct sockaddr_in6 *)&ss);
    } else {
        rv = uv_ip4_addr(cfg->metrics_host, cfg->metrics_port,
                         (struct sockaddr_in *)&ss);
    }
    if (rv == 0) {
        rv = uv_tcp_bind(&m->listener, (struct sockaddr *)&ss, 0);
    }
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&m->listener, LISTEN_BACKLOG,
                       connection_cb);
    }
    if (rv == 0) {
        rv = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&ss, &len);
    }
    if (rv != 0) {
        return rv;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, host_size);
        *port = ntohs(a->sin6_port);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, host, host_size);
        *port = ntohs(a->sin_port);
    }
    return 0;
}

int metrics_start(struct metrics **out, struct server *s, char *errmsg)
{
    const struct broker_config *cfg = s->cfg;
    struct metrics *m;
    char host[64];
    int port = 0;
    int rv;

    *out = NULL;
    if (!cfg->is_metrics_on) {
        return 0;
    }
    m = kappa_calloc(1, sizeof *m);
    if (m == NULL) {
        kappa_errmsg_printf(errmsg, "metrics: out of memory");
        return KAPPA_ENOMEM;
    }
    m->s = s;
    if (uv_tcp_init(s->loop, &m->listener) != 0) {
        kappa_free(m);
        kappa_errmsg_printf(errmsg, "metrics: cannot initialise listener");
        return KAPPA_EIO;
    }
    m->listener.data = m;
    m->is_listener_open = true;
    rv = bind_and_listen(m, host, sizeof host, &port);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "metrics.listen %s:%d: %s",
                            cfg->metrics_host, cfg->metrics_port,
                            uv_strerror(rv));
        metrics_close(m);
        return KAPPA_EIO;
    }
    rv = write_addr_file(cfg->data_dir, host, port, errmsg);
    if (rv != 0) {
        metrics_close(m);
        return rv;
    }
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "metrics listening addr=%s:%d", host,
              port);
    *out = m;
    return 0;
}

void metrics_close(struct metrics *m)
{
    if (m == NULL || m->is_closing) {
        return;
    }
    m->is_closing = true;
    for (struct mconn *c = m->conns; c != NULL; c = c->next) {
        mconn_close(c);
    }
    uv_close((uv_handle_t *)&m->listener, listener_close_cb);
}
